// What the subnet manager needs from etcd, as a small protocol (flannel's Registry), so that the
// acquisition logic is tested against an in-memory fake and runs against the real client.

import Addressing
import FoundationEssentials

/// All leases under `<prefix>/subnets/` and the store revision they were read at.
public struct LeaseSnapshot: Equatable, Sendable {
    public var leases: [Lease]
    public var revision: Int64
    public init(leases: [Lease], revision: Int64) { self.leases = leases; self.revision = revision }
}

public protocol LeaseRegistry: Sendable {
    /// The raw `<prefix>/config` value, or nil when the key does not exist.
    func config() async throws -> Data?
    func leases() async throws -> LeaseSnapshot
    /// Creates the subnet's key only if it does not exist (a create-if-absent transaction),
    /// attached to a new etcd lease of `ttl`. Nil when another node holds the key.
    func create(_ subnet: IPNetwork, _ attributes: LeaseAttributes, ttl: Duration) async throws -> Lease?
    /// Puts the key again with `attributes`: attached to a new etcd lease of `ttl`, or, with
    /// `ttl` nil, without any lease (a reservation stays a reservation).
    func update(_ subnet: IPNetwork, _ attributes: LeaseAttributes, ttl: Duration?) async throws -> Lease
    func delete(_ subnet: IPNetwork) async throws
}
