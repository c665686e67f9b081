// What the subnet manager and the peer watcher need from the store of leases, as a small
// protocol (flannel's Registry): etcd in podnetd (the EtcdLeases target), an in-memory registry
// in tests (TestSupport). Overlay itself knows no etcd.
//
// A registry is a revisioned key-value store: every change gets the next revision, a listing
// says which revision it was read at, and a watch from revision r delivers every change from r
// on, in order, once. When the history from r is gone (compacted), the watch says so and ends:
// the caller lists again and watches from the listing's revision + 1.

import Addressing
import FoundationEssentials

/// All leases under `<prefix>/subnets/` and the store revision they were read at.
public struct LeaseSnapshot: Equatable, Sendable {
    public var leases: [Lease]
    public var revision: Int64
    public init(leases: [Lease], revision: Int64) { self.leases = leases; self.revision = revision }
}

/// One change to the leases, as a watch delivers it.
public enum LeaseEvent: Equatable, Sendable {
    /// A lease was created or changed at `revision`.
    case put(Lease, revision: Int64)
    /// The lease of `subnet` (its key's first subnet: see `Lease.subnet`) was deleted, or
    /// expired, at `revision`.
    case delete(IPNetwork, revision: Int64)
    /// A key under the subnets prefix that is not a lease changed at `revision`: `subnet` is nil
    /// when the key names no subnet (a put or a delete), else a value that is not a lease was put
    /// at the subnet's key.
    case notALease(key: String, subnet: IPNetwork?, revision: Int64)
    /// The history the watch needed is gone: the store was compacted up to `revision`. The watch
    /// ends after this; list again and watch from the listing's revision + 1.
    case compacted(revision: Int64)
    /// The watch's connection broke (`reason`); it reconnects by itself and resumes after the
    /// last event delivered. For logs and metrics.
    case interrupted(reason: String)
}

/// A watch of the leases: ends after `.compacted`, or when its task is cancelled; throws only
/// what retrying cannot fix.
public typealias LeaseWatch = AsyncThrowingStream<LeaseEvent, any Error>

public protocol LeaseRegistry: Sendable {
    /// Where the network config is read from, for messages (etcd: `<prefix>/config`).
    var configKey: String { get }
    /// The raw `<prefix>/config` value, or nil when the key does not exist.
    func config() async throws -> Data?
    func leases() async throws -> LeaseSnapshot
    /// Creates the key only if it does not exist (a create-if-absent transaction), attached to a
    /// new etcd lease of `ttl`. Nil when another node holds the key.
    func create(_ key: SubnetKey, _ attributes: LeaseAttributes, ttl: Duration) async throws -> Lease?
    /// Puts the key again with `attributes`: attached to a new etcd lease of `ttl`, or, with
    /// `ttl` nil, without any lease (a reservation stays a reservation).
    func update(_ key: SubnetKey, _ attributes: LeaseAttributes, ttl: Duration?) async throws -> Lease
    func delete(_ key: SubnetKey) async throws
    /// The changes to the leases from `revision` on (see `LeaseEvent`).
    func watch(fromRevision revision: Int64) -> LeaseWatch
}

extension LeaseRegistry {
    /// `create` of an IPv4-only (or IPv6-only) key.
    public func create(_ subnet: IPNetwork, _ attributes: LeaseAttributes, ttl: Duration) async throws -> Lease? {
        try await create(SubnetKey(subnet), attributes, ttl: ttl)
    }
    /// `update` of an IPv4-only (or IPv6-only) key.
    public func update(_ subnet: IPNetwork, _ attributes: LeaseAttributes, ttl: Duration?) async throws -> Lease {
        try await update(SubnetKey(subnet), attributes, ttl: ttl)
    }
    /// `delete` of an IPv4-only (or IPv6-only) key.
    public func delete(_ subnet: IPNetwork) async throws { try await delete(SubnetKey(subnet)) }
}
