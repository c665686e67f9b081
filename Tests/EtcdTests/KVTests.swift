// Keys and values against a real etcd: round trips, prefixes, transactions, compaction.

import Etcd
import TestSupport
import Testing

@Suite struct KVTests {
    @Test func roundTripOfBytesThatAreNotText() async throws {
        try await withEtcd { _, etcd in
            let key: [UInt8] = [0x00, 0xff, 0x0a, 0x22, 0x5c, 0x2f, 0x80, 0x3d]
            let value = (0...255).map(UInt8.init) + Array("\"\\\n\u{0}".utf8)
            let first = try await etcd.put(key, value: value)
            let kv = try #require(try await etcd.get(key))
            #expect(kv.key == key && kv.value == value)
            #expect(kv.createRevision == first.header.revision && kv.modRevision == first.header.revision)
            #expect(kv.version == 1 && kv.lease == nil)

            let second = try await etcd.put(key, value: "text", prevKV: true)
            #expect(second.prevKV?.value == value)
            let updated = try #require(try await etcd.get(key))
            #expect(
                updated.valueString == "text" && updated.version == 2 && updated.createRevision == first.header.revision
            )

            let empty = try await etcd.put("empty", value: "")
            #expect(try await etcd.get("empty")?.value == [] && empty.header.revision > second.header.revision)
            #expect(try await etcd.get("missing") == nil)
            let deleted = try await etcd.delete(.key(key), prevKV: true)
            #expect(deleted.deleted == 1 && deleted.prevKVs.first?.valueString == "text")
            #expect(try await etcd.delete(.key(key)).deleted == 0)
            // The old revision still has it.
            #expect(try await etcd.range(.key(key), revision: first.header.revision).kvs.first?.value == value)
        }
    }

    @Test func prefixRangeLimitAndDelete() async throws {
        try await withEtcd { _, etcd in
            for key in ["/p/c", "/p/a", "/p/b", "/p0", "/pz", "/p"] {
                try await etcd.put(key, value: "v" + key)
            }
            let all = try await etcd.range(.prefix("/p/"))
            #expect(all.kvs.map(\.keyString) == ["/p/a", "/p/b", "/p/c"])
            #expect(all.kvs.map(\.valueString) == ["v/p/a", "v/p/b", "v/p/c"])
            #expect(all.count == 3 && !all.more)

            let limited = try await etcd.range(.prefix("/p/"), limit: 2)
            #expect(limited.kvs.map(\.keyString) == ["/p/a", "/p/b"] && limited.more && limited.count == 3)

            let keysOnly = try await etcd.range(.prefix("/p/"), keysOnly: true)
            #expect(keysOnly.kvs.allSatisfy { $0.value.isEmpty } && keysOnly.kvs.count == 3)

            #expect(try await etcd.range(.from("/p/b", to: "/pz")).kvs.map(\.keyString) == ["/p/b", "/p/c", "/p0"])
            #expect(try await etcd.range(.all).count == 6)
            #expect(try await etcd.delete(.prefix("/p/")).deleted == 3)
            #expect(try await etcd.range(.prefix("/p")).kvs.map(\.keyString) == ["/p", "/p0", "/pz"])
        }
    }

    @Test func createIfAbsentConflicts() async throws {
        try await withEtcd { _, etcd in
            let key = "/coreos.com/network/subnets/10.5.34.0-24"
            guard case .created(let revision) = try await etcd.create(key, value: "first") else {
                Issue.record("the first create did not create")
                return
            }
            guard case .exists(let existing) = try await etcd.create(key, value: "second") else {
                Issue.record("the second create overwrote the key")
                return
            }
            #expect(existing.valueString == "first" && existing.createRevision == revision)

            // Racing creators: exactly one wins.
            let results = try await withThrowingTaskGroup(of: CreateResult.self) { group in
                for i in 0..<8 { group.addTask { try await etcd.create("/race", value: "\(i)") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let winners = results.filter { if case .created = $0 { true } else { false } }
            #expect(winners.count == 1)
            let stored = try #require(try await etcd.get("/race"))
            for case .exists(let kv) in results { #expect(kv == stored) }
        }
    }

    @Test func transactionWithSeveralOperations() async throws {
        try await withEtcd { _, etcd in
            try await etcd.put("a", value: "1")
            try await etcd.put("b", value: "2")
            let txn = try await etcd.txn(
                if: [.value("a", .equal, "1"), .version("b", .greater, 0)],
                then: [.put("c", "3"), .delete(.key("a"), prevKV: true), .range(.prefix(""))],
                else: [.put("failed", "yes")])
            #expect(txn.succeeded && txn.responses.count == 3)
            guard case .delete(let deleted) = txn.responses[1], case .range(let range) = txn.responses[2] else {
                Issue.record("unexpected responses \(txn.responses)")
                return
            }
            #expect(deleted.deleted == 1 && deleted.prevKVs.first?.valueString == "1")
            #expect(range.kvs.map(\.keyString) == ["b", "c"])
            let other = try await etcd.txn(if: [.value("a", .equal, "1")], then: [], else: [.put("failed", "yes")])
            #expect(!other.succeeded)
            #expect(try await etcd.get("failed")?.valueString == "yes")
        }
    }

    @Test func rangeAtACompactedRevision() async throws {
        try await withEtcd { _, etcd in
            let first = try await etcd.put("k", value: "1")
            try await etcd.put("k", value: "2")
            let last = try await etcd.put("k", value: "3")
            try await etcd.compact(revision: last.header.revision)
            let error = await etcdError { try await etcd.range(.key("k"), revision: first.header.revision) }
            #expect(error?.isCompacted == true, "\(String(describing: error))")
            #expect(try await etcd.range(.key("k"), revision: last.header.revision).kvs.first?.valueString == "3")
        }
    }

    @Test func serverErrorsNameTheRequestAndEndpoint() async throws {
        try await withEtcd { server, etcd in
            let error = await etcdError { try await etcd.put("k", value: "v", lease: LeaseID(12345)) }
            guard case .server(let code, let message, let request, let endpoint)? = error else {
                Issue.record("not a server error: \(String(describing: error))")
                return
            }
            #expect(code == .notFound && message.contains("lease not found") && request == "/v3/kv/put")
            #expect(endpoint == server.clientURL && error?.isLeaseNotFound == true)
            #expect("\(error!)".contains("/v3/kv/put") && "\(error!)".contains(server.clientURL))
        }
    }
}
