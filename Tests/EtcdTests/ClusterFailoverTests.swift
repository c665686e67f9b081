// The client against a three-member etcd cluster on 127.0.0.1 (issue 8, item 15): a member that
// goes silent (SIGSTOP: its connections stay open, as when it is cut off the network), a leader
// that is killed, and a member that loses its leader. The watch must move to a survivor and resume
// after the last event it delivered, writes must go to a survivor, and lease keep-alives too.

import Etcd
import TestSupport
import Testing

@Suite(.serialized) struct ClusterFailoverTests {
    /// A client for every member, m1 first; the watch's own liveness check is out of the picture
    /// (an hour), so what moves the watch is the client's endpoint handling.
    func withClusterClient<T>(_ members: [EtcdServer], _ body: (EtcdClient) async throws -> T) async throws -> T {
        try await withClient(
            members.map(\.clientURL),
            configure: {
                $0.requestTimeout = .seconds(2)
                $0.watchPingInterval = .seconds(3600)
                $0.reconnectBackoff = .init(initial: .milliseconds(50), maximum: .milliseconds(500))
            }, body)
    }

    /// Puts until a put succeeds (a write during an election fails until there is a leader) or
    /// 30 s have passed; the last error otherwise.
    func putEventually(_ etcd: EtcdClient, _ key: String, _ value: String) async -> EtcdError? {
        var last: EtcdError?
        let held = await eventually(within: .seconds(30)) {
            do {
                try await etcd.put(key, value: value)
                return true
            } catch {
                last = error as? EtcdError
                return false
            }
        }
        return held ? nil : last
    }

    @Test func aSilentMemberIsLeftByWritesWatchesAndKeepalives() async throws {
        try await EtcdServer.withCluster(members: 3) { members in
            try await withClusterClient(members) { etcd in
                let lease = try await etcd.grantLease(ttl: .seconds(120))
                var keepAlive = etcd.keepAlive(lease.id, interval: .milliseconds(500)).makeAsyncIterator()
                _ = try await keepAlive.next()
                let start = try await etcd.range(.all).header.revision
                let watch = WatchRecorder(etcd.watch(.prefix("k/"), fromRevision: start + 1))
                try await etcd.put("k/1", value: "before")
                await watch.wait("the first event") { $0.events.count == 1 }

                // m1, the endpoint everything uses, goes silent.
                try members[0].freeze()
                defer { try? members[0].thaw() }
                // The first write times out on m1 (and is not retried: it may have been applied);
                // the next ones go to the survivors.
                #expect(await putEventually(etcd, "k/2", "during") == nil, "no write reached a survivor")
                // The client prefers a survivor. (While the survivors elect a new leader, their
                // requests can time out too and move the preference on, so it is checked as it
                // settles: the keep-alives every 500 ms keep requests going.)
                let left = await eventually(within: .seconds(10)) { etcd.currentEndpoint != members[0].clientURL }
                #expect(left, "the client still prefers the silent member")
                // The watch left m1 too, and delivered the write from where it was.
                await watch.wait(within: .seconds(30), "the event written on a survivor") { w in
                    w.events.contains { $0.kv.keyString == "k/2" }
                }
                let keys = watch.events.map(\.kv.keyString)
                #expect(
                    keys.first == "k/1" && keys.last == "k/2" && Set(keys).count == keys.count,
                    "\(watch.events.map(\.summary))")
                // The lease is still kept alive, through a survivor.
                let ttl = try await keepAlive.next()
                #expect(ttl != nil)
                #expect(try await etcd.timeToLive(lease.id).remaining != nil)
                await watch.cancel()
            }
        }
    }

    @Test func aKilledLeaderLeavesTheWatchOnASurvivorWithEveryEvent() async throws {
        try await EtcdServer.withCluster(members: 3) { members in
            // m1 leads, and is the client's first endpoint.
            let leaderHeld = await eventually(within: .seconds(20)) {
                if members[0].isLeader() { return true }
                if let leader = members.first(where: { $0.isLeader() }), let id = try? members[0].memberID() {
                    _ = try? leader.etcdctl("move-leader", id)
                }
                return members[0].isLeader()
            }
            try #require(leaderHeld, "m1 did not become the leader")
            try await withClusterClient(members) { etcd in
                let start = try await etcd.range(.all).header.revision
                let watch = WatchRecorder(etcd.watch(.prefix("k/"), fromRevision: start + 1))
                try await etcd.put("k/0", value: "0")
                await watch.wait("the first event") { $0.events.count == 1 }

                await members[0].kill()
                for i in 1...5 {
                    #expect(await putEventually(etcd, "k/\(i)", "\(i)") == nil, "k/\(i) was not written")
                }
                await watch.wait(within: .seconds(30), "every event after the leader was killed") {
                    $0.events.count >= 6
                }
                #expect(watch.events.map(\.kv.keyString) == (0...5).map { "k/\($0)" }, "\(watch.events.map(\.summary))")
                let revisions = watch.events.map(\.kv.modRevision)
                #expect(revisions == revisions.sorted() && Set(revisions).count == revisions.count)
                await watch.cancel()
            }
        }
    }

    @Test func aWatchOnAMemberWithoutLeaderIsEndedAndMoves() async throws {
        try await EtcdServer.withCluster(members: 3) { members in
            // Only m1 is given: the watch cannot move, but it must not sit silently on a member
            // that has no leader (the others are frozen, so it cannot have one).
            try await withClient(
                [members[0].clientURL],
                configure: {
                    $0.requestTimeout = .seconds(2)
                    $0.watchPingInterval = .seconds(3600)
                    $0.reconnectBackoff = .init(initial: .milliseconds(50), maximum: .milliseconds(500))
                }
            ) { etcd in
                let start = try await etcd.range(.all).header.revision
                let watch = WatchRecorder(etcd.watch(.prefix("k/"), fromRevision: start + 1))
                try await etcd.put("k/1", value: "1")
                await watch.wait("the first event") { $0.events.count == 1 }
                try members[1].freeze()
                try members[2].freeze()
                await watch.wait(within: .seconds(30), "etcd ending the watch on a member without a leader") { w in
                    w.interruptions.contains { "\($0)".contains("no leader") }
                }
                try members[1].thaw()
                try members[2].thaw()
                #expect(await putEventually(etcd, "k/2", "2") == nil)
                await watch.wait(within: .seconds(30), "the event after the leader is back") { $0.events.count == 2 }
                #expect(watch.events.map(\.kv.keyString) == ["k/1", "k/2"], "\(watch.events.map(\.summary))")
                await watch.cancel()
            }
        }
    }

    @Test func aKeepaliveRidesOutAMemberWithoutLeader() async throws {
        try await EtcdServer.withCluster(members: 3) { members in
            // Only m1 is given; the others are frozen for a while, so m1 has no leader and answers
            // keepalives with an error line ("no leader", or a timeout): the sequence must retry
            // through it, not end.
            // The request timeout is longer than etcd's own (7 s), so that etcd's answer comes first.
            try await withClient(
                [members[0].clientURL],
                configure: {
                    $0.requestTimeout = .seconds(10)
                    $0.reconnectBackoff = .init(initial: .milliseconds(50), maximum: .milliseconds(500))
                }
            ) { etcd in
                let lease = try await etcd.grantLease(ttl: .seconds(120))
                var keepAlive = etcd.keepAlive(lease.id, interval: .milliseconds(200)).makeAsyncIterator()
                _ = try await keepAlive.next()
                try members[1].freeze()
                try members[2].freeze()
                // Keepalives while m1 loses its leader; then the others come back.
                let thaw = Task {
                    try await Task.sleep(for: .seconds(12))
                    try members[1].thaw()
                    try members[2].thaw()
                }
                var ttls = 0
                do {
                    while ttls < 10, (try await keepAlive.next()) != nil { ttls += 1 }
                } catch {
                    Issue.record("the keepalive sequence ended with \(error)")
                }
                try await thaw.value
                #expect(ttls == 10)
                #expect(try await etcd.timeToLive(lease.id).remaining != nil)
            }
        }
    }
}
