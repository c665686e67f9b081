// The values the client hands out and takes: keys and key ranges, key-values, revisions, leases,
// transaction comparisons and operations. Plain Swift types; the JSON forms live in Codec.swift.

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Something that can be an etcd key or value. etcd keys and values are arbitrary bytes; most
/// callers use UTF-8 strings (`"/coreos.com/network/config"`) or the `Data` a `JSONEncoder` made.
public protocol EtcdBytesConvertible {
    var etcdBytes: [UInt8] { get }
}

extension String: EtcdBytesConvertible {
    public var etcdBytes: [UInt8] { Array(utf8) }
}

extension Substring: EtcdBytesConvertible {
    public var etcdBytes: [UInt8] { Array(utf8) }
}

extension Array: EtcdBytesConvertible where Element == UInt8 {
    public var etcdBytes: [UInt8] { self }
}

extension Data: EtcdBytesConvertible {
    public var etcdBytes: [UInt8] { Array(self) }
}

/// The keys a request applies to: one key, or `[key, end)`.
public struct KeyRange: Hashable, Sendable, CustomStringConvertible {
    public var key: [UInt8]
    /// Exclusive end; `nil` for the single key `key`. `[0]` means "every key from `key` on".
    public var end: [UInt8]?

    public init(key: [UInt8], end: [UInt8]?) {
        self.key = key
        self.end = end
    }

    /// Exactly `key`.
    public static func key(_ key: some EtcdBytesConvertible) -> KeyRange {
        KeyRange(key: key.etcdBytes, end: nil)
    }

    /// Every key starting with `prefix`: the end is the prefix with its last byte incremented
    /// (`/coreos.com/network/subnets/` gives `/coreos.com/network/subnets0`). An empty prefix is
    /// every key.
    public static func prefix(_ prefix: some EtcdBytesConvertible) -> KeyRange {
        var end = prefix.etcdBytes
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return KeyRange(key: prefix.etcdBytes, end: end)
            }
            end.removeLast()  // 0xff cannot be incremented: carry into the byte before
        }
        // Only 0xff bytes, or empty: no finite end, so "every key from the prefix on".
        let key = prefix.etcdBytes
        return KeyRange(key: key.isEmpty ? [0] : key, end: [0])
    }

    /// Every key in the store.
    public static var all: KeyRange { KeyRange(key: [0], end: [0]) }

    /// Keys from `start` (inclusive) to `end` (exclusive).
    public static func from(_ start: some EtcdBytesConvertible, to end: some EtcdBytesConvertible) -> KeyRange {
        KeyRange(key: start.etcdBytes, end: end.etcdBytes)
    }

    /// `key`, or `[key, end)`; bytes outside printable ASCII as `\xNN`.
    public var description: String {
        guard let end else { return printable(key) }
        return "[\(printable(key)), \(printable(end)))"
    }
}

/// Bytes as text: printable ASCII as it is, anything else as `\xNN`.
func printable(_ bytes: [UInt8]) -> String {
    bytes.map { byte in
        (0x20..<0x7f).contains(byte) && byte != UInt8(ascii: "\\")
            ? String(UnicodeScalar(byte)) : "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
    }.joined()
}

/// An etcd lease: keys attached to it are deleted when it expires or is revoked. etcd's IDs use
/// all 64 bits, so they travel as strings in JSON.
public struct LeaseID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ rawValue: Int64) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }
}

/// The header of every answer; `revision` is the store's revision when the request was served.
public struct ResponseHeader: Hashable, Sendable {
    public var clusterID: UInt64 = 0
    public var memberID: UInt64 = 0
    public var revision: Int64 = 0
    public var raftTerm: UInt64 = 0
    public init() {}
}

/// A key and its value, with the revisions etcd keeps for it.
public struct KeyValue: Hashable, Sendable, CustomStringConvertible {
    public var key: [UInt8]
    public var value: [UInt8]
    /// Revision of the put that created the key (since its last deletion); 0 if it does not exist.
    public var createRevision: Int64
    /// Revision of the last change to the key.
    public var modRevision: Int64
    /// Number of puts since the key was created.
    public var version: Int64
    /// The lease the key is attached to; `nil` when it has none (a flannel "reservation").
    public var lease: LeaseID?

    public init(
        key: [UInt8], value: [UInt8] = [], createRevision: Int64 = 0, modRevision: Int64 = 0,
        version: Int64 = 0, lease: LeaseID? = nil
    ) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    /// The key as UTF-8 text (invalid sequences replaced).
    public var keyString: String { String(decoding: key, as: UTF8.self) }
    /// The value as UTF-8 text (invalid sequences replaced).
    public var valueString: String { String(decoding: value, as: UTF8.self) }

    public var description: String {
        "\(keyString)=\(valueString) (mod \(modRevision)\(lease.map { ", lease \($0)" } ?? ""))"
    }
}

public struct RangeResponse: Hashable, Sendable {
    public var header: ResponseHeader
    public var kvs: [KeyValue]
    /// More keys match than the limit let through.
    public var more: Bool
    /// Number of keys in the range (all of them, not just those returned).
    public var count: Int64
}

public struct PutResponse: Hashable, Sendable {
    public var header: ResponseHeader
    /// The key before the put, when asked for and the key existed.
    public var prevKV: KeyValue?
}

public struct DeleteResponse: Hashable, Sendable {
    public var header: ResponseHeader
    public var deleted: Int64
    /// The deleted keys, when asked for.
    public var prevKVs: [KeyValue]
}

/// One comparison of a transaction's `if`.
public struct Compare: Hashable, Sendable {
    public enum Target: Hashable, Sendable {
        case version(Int64)
        case createRevision(Int64)
        case modRevision(Int64)
        case value([UInt8])
        /// `nil`: the key has no lease.
        case lease(LeaseID?)
    }

    public enum Result: String, Hashable, Sendable {
        case equal = "EQUAL", greater = "GREATER", less = "LESS", notEqual = "NOT_EQUAL"
    }

    public var key: [UInt8]
    /// Applies the comparison to every key in `[key, rangeEnd)` when set.
    public var rangeEnd: [UInt8]?
    public var target: Target
    public var result: Result

    public init(key: some EtcdBytesConvertible, rangeEnd: [UInt8]? = nil, _ target: Target, _ result: Result) {
        self.key = key.etcdBytes
        self.rangeEnd = rangeEnd
        self.target = target
        self.result = result
    }

    /// The key does not exist: its create revision is 0.
    public static func absent(_ key: some EtcdBytesConvertible) -> Compare {
        Compare(key: key, .createRevision(0), .equal)
    }

    public static func createRevision(
        _ key: some EtcdBytesConvertible, _ result: Result,
        _ revision: Int64
    ) -> Compare {
        Compare(key: key, .createRevision(revision), result)
    }

    public static func modRevision(_ key: some EtcdBytesConvertible, _ result: Result, _ revision: Int64) -> Compare {
        Compare(key: key, .modRevision(revision), result)
    }

    public static func version(_ key: some EtcdBytesConvertible, _ result: Result, _ version: Int64) -> Compare {
        Compare(key: key, .version(version), result)
    }

    public static func value(
        _ key: some EtcdBytesConvertible, _ result: Result,
        _ value: some EtcdBytesConvertible
    ) -> Compare {
        Compare(key: key, .value(value.etcdBytes), result)
    }

    public static func lease(_ key: some EtcdBytesConvertible, _ result: Result, _ lease: LeaseID?) -> Compare {
        Compare(key: key, .lease(lease), result)
    }
}

/// One operation of a transaction's `then` or `else`.
public struct TxnOp: Hashable, Sendable {
    enum Kind: Hashable, Sendable {
        case range(KeyRange, limit: Int64, keysOnly: Bool)
        case put(key: [UInt8], value: [UInt8], lease: LeaseID?, prevKV: Bool)
        case delete(KeyRange, prevKV: Bool)
    }

    let kind: Kind

    public static func range(_ range: KeyRange, limit: Int64 = 0, keysOnly: Bool = false) -> TxnOp {
        TxnOp(kind: .range(range, limit: limit, keysOnly: keysOnly))
    }

    public static func put(
        _ key: some EtcdBytesConvertible, _ value: some EtcdBytesConvertible,
        lease: LeaseID? = nil, prevKV: Bool = false
    ) -> TxnOp {
        TxnOp(kind: .put(key: key.etcdBytes, value: value.etcdBytes, lease: lease, prevKV: prevKV))
    }

    public static func delete(_ range: KeyRange, prevKV: Bool = false) -> TxnOp {
        TxnOp(kind: .delete(range, prevKV: prevKV))
    }
}

/// The answer to one ``TxnOp``, in the same position.
public enum TxnOpResponse: Hashable, Sendable {
    case range(RangeResponse)
    case put(PutResponse)
    case delete(DeleteResponse)
}

public struct TxnResponse: Hashable, Sendable {
    public var header: ResponseHeader
    /// Whether every comparison held, so the `then` operations ran (else the `else` ones did).
    public var succeeded: Bool
    public var responses: [TxnOpResponse]
}

/// The outcome of ``EtcdClient/create(_:value:lease:)``.
public enum CreateResult: Hashable, Sendable {
    /// The key was written at `revision`.
    case created(revision: Int64)
    /// The key already existed; nothing was written. This is what it holds.
    case exists(KeyValue)
}

/// A lease as granted: its ID and the TTL etcd chose (at least its minimum, about 2 s by default).
public struct LeaseGrant: Hashable, Sendable {
    public var id: LeaseID
    public var ttl: Duration
    public var header: ResponseHeader
}

/// What etcd knows about a lease.
public struct LeaseTimeToLive: Hashable, Sendable {
    public var id: LeaseID
    /// Time left, in whole seconds; `nil` when the lease does not exist (expired, revoked, never
    /// granted). etcd answers that case with TTL -1 and no error.
    public var remaining: Duration?
    /// The TTL the lease was granted with.
    public var granted: Duration
    /// The keys attached, when asked for.
    public var keys: [[UInt8]]
    public var header: ResponseHeader
}

/// A change to one key.
public struct WatchEvent: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case put
        /// Deleted, or its lease expired or was revoked. `kv` then carries only the key and the
        /// deletion's `modRevision`.
        case delete
    }

    public var kind: Kind
    public var kv: KeyValue
    /// The key before the change, when the watch asked for it.
    public var prevKV: KeyValue?

    public init(kind: Kind, kv: KeyValue, prevKV: KeyValue? = nil) {
        self.kind = kind
        self.kv = kv
        self.prevKV = prevKV
    }
}
