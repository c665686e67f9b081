// nftables over netlink: the seam between the rule sets and the kernel, and the matches they are
// made of, as the expressions nft 1.0.6 generates for the same text (so `nft list ruleset`
// prints the rules exactly as if `nft -f` had added them).
//
// The backends ask for the kernel through `NFTablesKernel`: the real one (`NetlinkNFTables`)
// opens a NETLINK_NETFILTER socket per call (microseconds, no process); unit tests pass a fake
// that records batches and injects errors. When the kernel refuses a batch as a whole (it lacks
// an expression or an attribute: EOPNOTSUPP, EINVAL, or there is no nfnetlink at all), the rule
// set falls back to the `nft -f -` script of the same change, which is what nft would have made
// of it; every other error is reported.

import Addressing
import Netlink
import Synchronization

/// nf_tables as the nftables backends use it. Errors are `NetfilterError.netlink`.
public protocol NFTablesKernel: Sendable {
    /// The rules of `table` (of `chain` only, when given), with handles; empty when missing.
    func rules(_ family: NFTFamily, table: String, chain: String?) throws(NetfilterError) -> [NFTListedRule]
    /// Applies `batch` as one transaction.
    func apply(_ batch: NFTBatch) throws(NetfilterError)
}

/// The kernel itself, through one NETLINK_NETFILTER socket opened at first use in the calling
/// thread's network namespace and kept for the life of this value: a listing and the batch after
/// it share it, and it is released once. (Releasing such a socket waits for the kernel's work of
/// every earlier commit, see NFTablesSession.swift, so fewer releases mean fewer waits.)
public final class NetlinkNFTables: NFTablesKernel, @unchecked Sendable {
    /// Whether the socket, once a batch went through it, is left to a detached child to release
    /// (`NFTablesSession.closeDetached`): right for a plugin process, which exits at once; a
    /// long-lived process would collect unreaped children.
    public let detachedClose: Bool
    private let lock = Mutex(())
    /// Guarded by `lock`.
    nonisolated(unsafe) private var cached: NFTablesSession?

    public init(detachedClose: Bool = true) {
        self.detachedClose = detachedClose
    }

    private func session() throws(NetlinkError) -> NFTablesSession {
        try lock.withLock { (_) throws(NetlinkError) -> NFTablesSession in
            if let cached { return cached }
            let s = try NFTablesSession()
            cached = s
            return s
        }
    }

    public func rules(_ family: NFTFamily, table: String, chain: String?) throws(NetfilterError) -> [NFTListedRule] {
        do throws(NetlinkError) {
            return try session().rules(family, table: table, chain: chain)
        } catch { throw .netlink(error) }
    }

    /// Applies the batch; with `detachedClose`, the socket is then left to a detached child.
    public func apply(_ batch: NFTBatch) throws(NetfilterError) {
        do throws(NetlinkError) {
            let s = try session()
            try s.apply(batch)
            if detachedClose { s.closeDetached() }
        } catch { throw .netlink(error) }
    }
}

extension NetfilterError {
    /// Whether this is the kernel refusing nftables over netlink as such, so that `nft -f` may
    /// still do it: no nfnetlink socket, or a batch rejected as unsupported or invalid.
    var refusesNetlink: Bool {
        guard case .netlink(.libnl(let code, let operation, _)) = self else { return false }
        if operation.hasPrefix("nl_connect") { return true }
        switch code {
        case .notSupported, .invalid: return true
        default: return false
        }
    }

    /// A rule handle or chain vanished between our listing and our batch (ENOENT).
    var isNetlinkNotFound: Bool {
        if case .netlink(let e) = self { return e.isNotFound }
        return false
    }
}

/// Builds the expressions of the matches and statements the rule sets use.
enum NFTMatch {
    /// `meta nfproto ipv4|ipv6`: in an `inet` table, the dependency nft puts before an ip or ip6 match.
    static func nfproto(_ family: IPFamily) -> [NFTExpression] {
        [.meta(.nfproto, into: .r1), .cmp(.eq, .r1, [family == .v4 ? 2 : 10])]
    }

    /// `ip|ip6 saddr|daddr [!=] <network>`: a whole address is a plain comparison; a prefix
    /// of whole bytes loads only those bytes; any other prefix (and /0) loads the address and
    /// masks it (nft's own choice for each, so the listing prints the prefix back).
    static func address(source: Bool, _ op: NFTCmpOp, _ net: IPNetwork) -> [NFTExpression] {
        let v4 = net.family == .v4
        let width = v4 ? 4 : 16
        let offset: UInt32 = v4 ? (source ? 12 : 16) : (source ? 8 : 24)
        let prefix = net.prefixLength
        let bytes = net.network.address.bytes
        if prefix == width * 8 {
            return [
                .payload(.network, offset: offset, length: UInt32(truncatingIfNeeded: width), into: .r1),
                .cmp(op, .r1, net.address.bytes),
            ]
        }
        if prefix > 0 && prefix % 8 == 0 {
            return [
                .payload(.network, offset: offset, length: UInt32(truncatingIfNeeded: prefix / 8), into: .r1),
                .cmp(op, .r1, Array(bytes.prefix(prefix / 8))),
            ]
        }
        let mask = (0..<width).map { i -> UInt8 in
            let bits = min(max(prefix - 8 * i, 0), 8)
            return bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
        return [
            .payload(.network, offset: offset, length: UInt32(truncatingIfNeeded: width), into: .r1),
            .bitwise(.r1, mask: mask, xor: [UInt8](repeating: 0, count: width)),
            .cmp(op, .r1, bytes),
        ]
    }

    /// `ip|ip6 saddr|daddr <address>`.
    static func address(source: Bool, _ a: IPAddress) -> [NFTExpression] {
        address(source: source, .eq, IPNetwork(address: a, prefixLength: a.family.bitWidth)!)
    }

    /// `tcp|udp|sctp dport <port>`: the l4proto dependency, then the port.
    static func dport(_ proto: String, _ port: Int) -> [NFTExpression]? {
        guard let number = l4proto(proto), let p = UInt16(exactly: port) else { return nil }
        return [
            .meta(.l4proto, into: .r1), .cmp(.eq, .r1, [number]),
            .payload(.transport, offset: 2, length: 2, into: .r1),
            .cmp(.eq, .r1, [UInt8(truncatingIfNeeded: p >> 8), UInt8(truncatingIfNeeded: p)]),
        ]
    }

    static func l4proto(_ proto: String) -> UInt8? {
        switch proto {
        case "tcp": 6
        case "udp": 17
        case "sctp": 132
        default: nil
        }
    }

    /// `fib daddr type local`: the address type, RTN_LOCAL (2), in host byte order.
    static let fibDaddrLocal: [NFTExpression] = [.fibDaddrType(into: .r1), .cmp(.eq, .r1, [2, 0, 0, 0])]

    /// `dnat to <address>:<port>` (`[address]:port` in ip6).
    static func dnat(_ address: IPAddress, port: Int) -> [NFTExpression]? {
        guard let p = UInt16(exactly: port) else { return nil }
        return [
            .immediate(address.bytes, into: .r1),
            .immediate([UInt8(truncatingIfNeeded: p >> 8), UInt8(truncatingIfNeeded: p)], into: .r2),
            .nat(.dnat, family: NFTFamily(address.family), address: .r1, port: .r2),
        ]
    }
}
