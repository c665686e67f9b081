// Watches against a real etcd: events with revisions, resuming after a server restart, compaction,
// a stream that stops answering.

import Etcd
import TestSupport
import Testing

@Suite struct WatchTests {
    @Test func seesPutsAndDeletesWithRevisions() async throws {
        try await withEtcd { _, etcd in
            let start = try await etcd.range(.all).header.revision
            let watch = WatchRecorder(etcd.watch(.prefix("/w/"), fromRevision: start + 1, prevKV: true))
            let a = try await etcd.put("/w/a", value: "1")
            try await etcd.put("/other", value: "ignored")
            let lease = try await etcd.grantLease(ttl: .seconds(30))
            let b = try await etcd.put("/w/b", value: "2", lease: lease.id)
            let deleted = try await etcd.delete(.key("/w/a"))
            try await etcd.revokeLease(lease.id)  // deletes /w/b
            let last = try await etcd.range(.all).header.revision
            await watch.wait("4 events") { $0.events.count >= 4 }
            #expect(
                watch.events.map(\.summary) == [
                    "PUT /w/a=1@\(a.header.revision)", "PUT /w/b=2@\(b.header.revision)",
                    "DELETE /w/a@\(deleted.header.revision)", "DELETE /w/b@\(last)",
                ])
            #expect(watch.events[1].kv.lease == lease.id && watch.events[1].kv.createRevision == b.header.revision)
            #expect(watch.events[2].prevKV?.valueString == "1" && watch.events[3].prevKV?.lease == lease.id)
            #expect(watch.interruptions.isEmpty && watch.end == nil)
            await watch.cancel()
            #expect(watch.end != nil)
        }
    }

    @Test func fromNowSeesOnlyLaterChanges() async throws {
        try await withEtcd { _, etcd in
            try await etcd.put("/n/before", value: "0")
            let watch = WatchRecorder(etcd.watch(.prefix("/n/")))
            // "Now" is etcd's revision when it creates the watch: every write after that is seen.
            let created = await eventually(within: .seconds(10)) { etcd.statistics.watchesCreated == 1 }
            #expect(created, "etcd did not confirm the watch: \(watch.updates)")
            for value in 1...3 { try await etcd.put("/n/k", value: "\(value)") }
            await watch.wait("every later write") { $0.events.count == 3 }
            #expect(!watch.events.contains { $0.kv.keyString == "/n/before" })
            #expect(watch.events.map(\.kv.valueString) == ["1", "2", "3"])
            await watch.cancel()
        }
    }

    @Test func resumesAfterARestartAndDeliversEachEventOnce() async throws {
        // A long backoff, so the changes made after the restart happen while the watch is still
        // waiting to reconnect: they arrive through the resume, not through a live stream. (3 s was
        // too short on a loaded CI machine: restarting etcd took about that long.)
        let configure: (inout EtcdClient.Configuration) -> Void = {
            $0.reconnectBackoff = .init(initial: .seconds(8), maximum: .seconds(8))
        }
        try await withEtcd(configure: configure) { server, etcd in
            let start = try await etcd.range(.all).header.revision
            let watch = WatchRecorder(etcd.watch(.prefix("/r/"), fromRevision: start + 1))
            let a = try await etcd.put("/r/a", value: "1")
            await watch.wait("the first event") { $0.events.count == 1 }

            await server.stop()
            await watch.wait("the disconnect") { $0.interruptions.count >= 1 }
            await watch.wait(within: .seconds(20), "a failed reconnect") { $0.interruptions.count >= 2 }
            try await server.restart()
            let b = try await etcd.put("/r/b", value: "2")
            let deleted = try await etcd.delete(.key("/r/a"))
            #expect(watch.events.count == 1, "the changes were seen before the watch reconnected")

            await watch.wait(within: .seconds(20), "the events made while disconnected") { $0.events.count >= 3 }
            let c = try await etcd.put("/r/c", value: "3")
            await watch.wait("a live event after the resume") { $0.events.count >= 4 }
            // No event twice: a last write comes after anything the stream still had to deliver.
            let end = try await etcd.put("/r/end", value: "")
            await watch.wait("the last write") { $0.events.last?.kv.keyString == "/r/end" }
            #expect(
                watch.events.map(\.summary) == [
                    "PUT /r/a=1@\(a.header.revision)", "PUT /r/b=2@\(b.header.revision)",
                    "DELETE /r/a@\(deleted.header.revision)", "PUT /r/c=3@\(c.header.revision)",
                    "PUT /r/end=@\(end.header.revision)",
                ])
            #expect(etcd.statistics.watchReconnects >= 2)
            await watch.cancel()
        }
    }

    @Test func aCompactedStartRevisionIsReportedAndEndsTheWatch() async throws {
        try await withEtcd { _, etcd in
            let first = try await etcd.put("/c/k", value: "1")
            try await etcd.put("/c/k", value: "2")
            let last = try await etcd.put("/c/k", value: "3")
            try await etcd.compact(revision: last.header.revision)

            let watch = WatchRecorder(etcd.watch(.prefix("/c/"), fromRevision: first.header.revision))
            await watch.wait("the end of the watch") { $0.end != nil }
            guard case .compacted(let revision)? = watch.updates.last else {
                Issue.record("no compaction reported: \(watch.updates)")
                return
            }
            #expect(revision == last.header.revision)
            guard case .success? = watch.end else {
                Issue.record("the watch failed: \(String(describing: watch.end))")
                return
            }

            // Recovery as documented: re-list, then watch from the list's revision + 1.
            let list = try await etcd.range(.prefix("/c/"))
            #expect(list.kvs.first?.valueString == "3")
            let again = WatchRecorder(etcd.watch(.prefix("/c/"), fromRevision: list.header.revision + 1))
            let next = try await etcd.put("/c/k", value: "4")
            await again.wait("the event after the re-list") { !$0.events.isEmpty }
            #expect(again.events.map(\.summary) == ["PUT /c/k=4@\(next.header.revision)"])
            await again.cancel()
        }
    }

    @Test func aStreamThatStopsAnsweringIsReplaced() async throws {
        let configure: (inout EtcdClient.Configuration) -> Void = {
            $0.watchPingInterval = .milliseconds(300)
            $0.requestTimeout = .milliseconds(700)
            $0.reconnectBackoff = .init(initial: .milliseconds(100), maximum: .milliseconds(500))
        }
        try await withEtcd(configure: configure) { server, etcd in
            let start = try await etcd.range(.all).header.revision
            let watch = WatchRecorder(etcd.watch(.prefix("/s/"), fromRevision: start + 1))
            try await etcd.put("/s/a", value: "1")
            await watch.wait("the first event") { $0.events.count == 1 }
            // A quiet but healthy stream answers its pings and is kept.
            try await Task.sleep(for: .seconds(2.5))
            #expect(watch.interruptions.isEmpty, "\(watch.interruptions)")
            // Frozen, etcd keeps its connections open but answers nothing: only the ping notices.
            try server.freeze()
            let (_, waited) = await measure {
                await watch.wait("the ping timeout") { !$0.interruptions.isEmpty }
            }
            try server.thaw()
            #expect(waited < .seconds(30), "the frozen server went unnoticed for \(waited)")
            guard case .timeout? = watch.interruptions.first else {
                Issue.record("not a timeout: \(watch.interruptions)")
                return
            }
            // A thawed etcd on a loaded machine can take longer than this client's short request
            // timeout to answer again: wait for a read (safe to repeat) before the one write.
            let answering = await eventually(within: .seconds(20)) { (try? await etcd.range(.key("/s/b"))) != nil }
            #expect(answering, "the thawed etcd does not answer reads")
            try await etcd.put("/s/b", value: "2")
            await watch.wait(within: .seconds(10), "the event after the freeze") { $0.events.count == 2 }
            #expect(watch.events.map(\.kv.valueString) == ["1", "2"])
            await watch.cancel()
        }
    }
}
