// The lease registry over etcd, in flanneld's layout:
//   <prefix>/config                  the network config (written by the operator)
//   <prefix>/subnets/10.5.34.0-24    one lease per node, attached to an etcd lease (or none: a
//                                    reservation); dual stack: 10.5.34.0-24&fd00:5:0:22::-64
// Ranges and watches use `<prefix>/subnets/` (with the slash), not flanneld's `<prefix>/subnets`
// prefix, which also matched unrelated keys such as `<prefix>/subnets-foo`.
//
// The watch is etcd's (reconnects, failover, compaction; see Etcd/Watch.swift), its batches
// flattened into one `LeaseEvent` per changed key.

import Addressing
import Etcd
import FoundationEssentials
import Logging
import Overlay

public struct EtcdLeaseRegistry: LeaseRegistry {
    public let client: EtcdClient
    /// The prefix without a trailing slash (flanneld joins paths, so "/x/" and "/x" are the same).
    public let prefix: String
    let logger: Logger

    public init(client: EtcdClient, prefix: String, logger: Logger) {
        self.client = client
        var p = prefix
        while p.hasSuffix("/") && p.count > 1 { p.removeLast() }
        self.prefix = p
        self.logger = logger
    }

    public var subnetsPrefix: String { prefix + "/subnets/" }
    public var configKey: String { prefix + "/config" }
    func key(_ key: SubnetKey) -> String { subnetsPrefix + key.name }

    public func config() async throws -> Data? {
        try await client.get(configKey).map { Data($0.value) }
    }

    public func leases() async throws -> LeaseSnapshot {
        let r = try await client.range(.prefix(subnetsPrefix))
        return LeaseSnapshot(leases: r.kvs.compactMap(lease), revision: r.header.revision)
    }

    /// A lease from a key-value, or nil (logged) for keys and values that are not leases.
    public func lease(_ kv: KeyValue) -> Lease? {
        guard let key = SubnetKey.parse(kv.keyString) else {
            logger.warning("skipping a key that is not a subnet lease", metadata: ["etcd.key": "\(kv.keyString)"])
            return nil
        }
        guard let attributes = LeaseAttributes(json: Data(kv.value)) else {
            logger.warning("skipping a lease whose value cannot be read", metadata: ["etcd.key": "\(kv.keyString)"])
            return nil
        }
        return Lease(key: key, attributes: attributes, etcdLease: kv.lease?.rawValue)
    }

    public func create(_ subnet: SubnetKey, _ attributes: LeaseAttributes, ttl: Duration) async throws -> Lease? {
        let grant = try await client.grantLease(ttl: ttl)
        switch try await client.create(key(subnet), value: attributes.json(), lease: grant.id) {
        case .created:
            return Lease(
                key: subnet, attributes: attributes, etcdLease: grant.id.rawValue,
                expiration: Date().addingTimeInterval(Double(grant.ttl.components.seconds)))
        case .exists:
            try? await client.revokeLease(grant.id)
            return nil
        }
    }

    public func update(_ subnet: SubnetKey, _ attributes: LeaseAttributes, ttl: Duration?) async throws -> Lease {
        guard let ttl else {
            _ = try await client.put(key(subnet), value: attributes.json())
            return Lease(key: subnet, attributes: attributes, etcdLease: nil)
        }
        let grant = try await client.grantLease(ttl: ttl)
        _ = try await client.put(key(subnet), value: attributes.json(), lease: grant.id)
        return Lease(
            key: subnet, attributes: attributes, etcdLease: grant.id.rawValue,
            expiration: Date().addingTimeInterval(Double(grant.ttl.components.seconds)))
    }

    public func delete(_ subnet: SubnetKey) async throws {
        _ = try await client.delete(.key(key(subnet)))
    }

    /// Changes to the leases from `revision` on (see EtcdClient.watch for reconnects and
    /// compaction).
    public func watch(fromRevision revision: Int64) -> LeaseWatch {
        let (stream, continuation) = LeaseWatch.makeStream()
        let updates = client.watch(.prefix(subnetsPrefix), fromRevision: revision)
        let task = Task {
            do {
                for try await update in updates {
                    switch update {
                    case .events(let events, _):
                        for e in events { continuation.yield(event(e)) }
                    case .compacted(let revision):
                        continuation.yield(.compacted(revision: revision))
                    case .interrupted(let error):
                        continuation.yield(.interrupted(reason: "\(error)"))
                    }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// One etcd event as a lease event; a value that is not a lease is logged (by `lease(_:)`).
    func event(_ e: WatchEvent) -> LeaseEvent {
        let revision = e.kv.modRevision
        guard let subnet = SubnetKey.parse(e.kv.keyString)?.subnet else {
            return .notALease(key: e.kv.keyString, subnet: nil, revision: revision)
        }
        switch e.kind {
        case .delete:
            return .delete(subnet, revision: revision)
        case .put:
            guard let lease = self.lease(e.kv) else {
                return .notALease(key: e.kv.keyString, subnet: subnet, revision: revision)
            }
            return .put(lease, revision: revision)
        }
    }
}
