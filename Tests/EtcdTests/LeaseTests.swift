// Leases against a real etcd: grant, keepalive, revoke, time-to-live, expiry.

import Etcd
import TestSupport
import Testing

@Suite struct LeaseTests {
    @Test func keepaliveKeepsAKeyPastItsTTLAndRevokeDeletesIt() async throws {
        try await withEtcd { _, etcd in
            let lease = try await etcd.grantLease(ttl: .seconds(2))
            #expect(lease.ttl == .seconds(2))
            try await etcd.put("/alive", value: "yes", lease: lease.id)
            #expect(try await etcd.get("/alive")?.lease == lease.id)

            let keeper = Task {
                var ttls: [Duration] = []
                for try await ttl in etcd.keepAlive(lease.id) { ttls.append(ttl) }
                return ttls
            }
            try await Task.sleep(for: .seconds(5))  // two and a half TTLs
            #expect(try await etcd.get("/alive")?.valueString == "yes")
            keeper.cancel()
            let ttls = try await keeper.value
            #expect(ttls.count >= 5 && ttls.allSatisfy { $0 == .seconds(2) }, "\(ttls)")

            try await etcd.revokeLease(lease.id)
            #expect(try await etcd.get("/alive") == nil)
            let again = await etcdError { try await etcd.revokeLease(lease.id) }
            #expect(again?.isLeaseNotFound == true, "\(String(describing: again))")
            let refresh = await etcdError { try await etcd.keepAliveOnce(lease.id) }
            guard case .leaseExpired(lease.id)? = refresh else {
                Issue.record("keepalive of a revoked lease: \(String(describing: refresh))")
                return
            }
        }
    }

    @Test func aLeaseWithoutKeepaliveExpires() async throws {
        try await withEtcd { _, etcd in
            let lease = try await etcd.grantLease(ttl: .milliseconds(10))  // raised to etcd's minimum
            #expect(lease.ttl >= .seconds(1))
            try await etcd.put("/mortal", value: "x", lease: lease.id)
            #expect(try await eventually(within: .seconds(8)) { try await etcd.get("/mortal") == nil })
            let sequence = etcd.keepAlive(lease.id)
            let error = await etcdError {
                for try await _ in sequence {}
            }
            guard case .leaseExpired? = error else {
                Issue.record("keepalive of an expired lease: \(String(describing: error))")
                return
            }
        }
    }

    @Test func timeToLiveAndChosenIDs() async throws {
        try await withEtcd { _, etcd in
            let lease = try await etcd.grantLease(ttl: .seconds(60), id: LeaseID(7587862072907233287))
            #expect(lease.id == LeaseID(7587862072907233287) && lease.ttl == .seconds(60))
            try await etcd.put("/a", value: "1", lease: lease.id)
            try await etcd.put("/b", value: "2", lease: lease.id)
            let ttl = try await etcd.timeToLive(lease.id, keys: true)
            #expect(ttl.id == lease.id && ttl.granted == .seconds(60))
            #expect(ttl.remaining.map { $0 > .seconds(55) && $0 <= .seconds(60) } == true, "\(ttl)")
            #expect(Set(ttl.keys.map { String(decoding: $0, as: UTF8.self) }) == ["/a", "/b"])
            #expect(try await etcd.timeToLive(lease.id).keys.isEmpty)
            let refreshed = try await etcd.keepAliveOnce(lease.id)
            #expect(refreshed == .seconds(60))

            // A key without a lease is a "reservation": no lease field, and TimeToLive(0) says -1.
            try await etcd.put("/a", value: "reserved")
            #expect(try await etcd.get("/a")?.lease == nil)
            #expect(try await etcd.timeToLive(LeaseID(0)).remaining == nil)
            #expect(try await etcd.timeToLive(LeaseID(42)).remaining == nil)
        }
    }
}
