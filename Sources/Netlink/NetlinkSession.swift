// The one place in podnet that talks to libnl-route-3. Every other module goes through the typed
// methods here; each names its iproute2 twin in a comment.
//
// A session is a NETLINK_ROUTE socket bound to the network namespace it was opened in: open it
// inside NetworkNamespace.run { } to operate on a container's namespace from anywhere.

import Addressing
import CLibNL

/// libnl's error codes (NLE_*). libnl folds the kernel's errno into these, so EEXIST arrives as
/// `.exists` and ENODEV/ENOENT as `.notFound` or `.noDevice`.
public enum NLECode: Equatable, Sendable {
    case exists, notFound, noDevice, busy, permission, invalid, notSupported, range, other(Int32)

    init(_ rc: Int32) {
        switch -abs(rc) {
        case -NLE_EXIST: self = .exists
        case -NLE_OBJ_NOTFOUND: self = .notFound
        case -NLE_NODEV: self = .noDevice
        case -NLE_BUSY: self = .busy
        case -NLE_PERM, -NLE_NOACCESS: self = .permission
        case -NLE_INVAL: self = .invalid
        case -NLE_OPNOTSUPP: self = .notSupported
        case -NLE_RANGE: self = .range
        default: self = .other(abs(rc))
        }
    }
}

public enum NetlinkError: Error, Equatable, CustomStringConvertible {
    /// A libnl call failed; `operation` names the request and its object, e.g. "RTM_NEWLINK veth1a2b3c4d".
    case libnl(NLECode, operation: String, message: String)
    /// An argument could not be turned into a netlink attribute.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .libnl(_, let op, let msg): "\(op): \(msg)"
        case .invalidArgument(let s): s
        }
    }

    /// True for "does not exist" in any of libnl's spellings.
    public var isNotFound: Bool {
        if case .libnl(let c, _, _) = self { return c == .notFound || c == .noDevice }
        return false
    }
    public var isExists: Bool {
        if case .libnl(.exists, _, _) = self { return true }
        return false
    }
}

/// `value` as an unsigned 32-bit attribute (an MTU, a metric), or `.invalidArgument` naming
/// `what`: a conversion that traps would take the whole process down.
func u32(_ value: Int, _ what: @autoclosure () -> String) throws(NetlinkError) -> UInt32 {
    guard let v = UInt32(exactly: value) else {
        throw .invalidArgument("\(what()) \(value) is out of range (0 to \(UInt32.max))")
    }
    return v
}

/// Runs a libnl call that returns 0 or a negative NLE_* code.
@inline(__always)
func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws(NetlinkError) {
    if rc < 0 {
        throw NetlinkError.libnl(NLECode(rc), operation: operation(), message: String(cString: nl_geterror(rc)))
    }
}

public final class NetlinkSession {
    let sock: OpaquePointer

    /// Opens a NETLINK_ROUTE socket in the calling thread's current network namespace.
    public init() throws(NetlinkError) {
        guard let s = nl_socket_alloc() else { throw .invalidArgument("nl_socket_alloc failed") }
        let rc = nl_connect(s, NETLINK_ROUTE)
        if rc < 0 { nl_socket_free(s) }
        try check(rc, "nl_connect NETLINK_ROUTE")
        sock = s
    }

    deinit { nl_socket_free(sock) }
}

// MARK: - nl_addr conversion

extension IPAddress {
    /// A new nl_addr holding this address with `prefixLength`; the caller owns it (nl_addr_put).
    func nlAddr(prefixLength: Int? = nil) -> OpaquePointer {
        let b = bytes
        let a = b.withUnsafeBytes { nl_addr_build(family.af, $0.baseAddress, $0.count) }!
        nl_addr_set_prefixlen(a, Int32(prefixLength ?? family.bitWidth))
        return a
    }

    init?(nlAddr a: OpaquePointer?) {
        guard let a, let p = nl_addr_get_binary_addr(a) else { return nil }
        let n = Int(nl_addr_get_len(a))
        guard n == 4 || n == 16 else { return nil }
        self.init(bytes: Array(UnsafeRawBufferPointer(start: p, count: n)))
    }
}

extension IPNetwork {
    func nlAddr() -> OpaquePointer { address.nlAddr(prefixLength: prefixLength) }
}

extension MACAddress {
    func nlAddr() -> OpaquePointer {
        bytes.withUnsafeBytes { nl_addr_build(AF_LLC, $0.baseAddress, 6) }!
    }

    init?(nlAddr a: OpaquePointer?) {
        guard let a, nl_addr_get_len(a) == 6, let p = nl_addr_get_binary_addr(a) else { return nil }
        self.init(bytes: Array(UnsafeRawBufferPointer(start: p, count: 6)))
    }
}

/// Iterates a libnl cache and frees it afterwards.
func forEachObject(in cache: OpaquePointer, _ body: (OpaquePointer) -> Void) {
    defer { nl_cache_free(cache) }
    var obj = nl_cache_get_first(cache)
    while let o = obj {
        body(o)
        obj = nl_cache_get_next(o)
    }
}
