// Several endpoints and timeouts: failover past a dead endpoint, a bound on an endpoint that never
// answers, and what the caller is told when nothing answers.

import Etcd
import TestSupport
import Testing

@Suite struct EndpointTests {
    @Test func failsOverToTheSecondEndpointWhenTheFirstIsDown() async throws {
        try await EtcdServer.with { server in
            let dead = "http://127.0.0.1:\(try freePort())"
            try await withClient([dead, server.clientURL]) { etcd in
                let (_, took) = try await measure { try await etcd.put("k", value: "v") }
                #expect(took < .seconds(30), "the failover hung for \(took)")
                #expect(etcd.currentEndpoint == server.clientURL)
                #expect(etcd.statistics.failovers == 1)
                #expect(try await etcd.get("k")?.valueString == "v")
                #expect(etcd.statistics.failovers == 1, "stays on the endpoint that answered")

                let start = try await etcd.range(.all).header.revision
                let watch = WatchRecorder(etcd.watch(.key("w"), fromRevision: start + 1))
                try await etcd.put("w", value: "1")
                await watch.wait("the event through the second endpoint") { $0.events.count == 1 }
                await watch.cancel()
            }
        }
    }

    @Test func aWatchFailsOverWhenItsEndpointIsDown() async throws {
        try await EtcdServer.with { server in
            let dead = "http://127.0.0.1:\(try freePort())"
            // The dead endpoint comes first and the client has not learnt otherwise yet.
            try await withClient(
                [dead, server.clientURL],
                configure: { $0.reconnectBackoff = .init(initial: .milliseconds(50)) }
            ) { etcd in
                let watch = WatchRecorder(etcd.watch(.key("w"), fromRevision: 1))
                await watch.wait("the refused connection") { !$0.interruptions.isEmpty }
                guard case .connection(let reason, _, let endpoint)? = watch.interruptions.first else {
                    Issue.record("\(watch.interruptions)")
                    return
                }
                #expect(reason == "connection refused" && endpoint == dead)
                try await etcd.put("w", value: "1")
                await watch.wait("the event through the second endpoint") { $0.events.count == 1 }
                await watch.cancel()
            }
        }
    }

    @Test func nothingAnswersEveryEndpointIsReported() async throws {
        let first = "http://127.0.0.1:\(try freePort())", second = "http://127.0.0.1:\(try freePort())"
        try await withClient([first, second]) { etcd in
            let error = await etcdError { try await etcd.put("k", value: "v") }
            guard case .unavailable(let request, let failures)? = error else {
                Issue.record("\(String(describing: error))")
                return
            }
            #expect(request == "/v3/kv/put" && failures.count == 2 && error?.isUnavailable == true)
            let text = "\(error!)"
            #expect(text.contains(first) && text.contains(second) && text.contains("connection refused"), "\(text)")
            #expect(etcd.statistics.errors == 1)
        }
    }

    @Test func anEndpointThatNeverAnswersTimesOut() async throws {
        let silent = try SilentTCPListener()
        defer { silent.close() }
        let configure: (inout EtcdClient.Configuration) -> Void = { $0.requestTimeout = .milliseconds(500) }
        try await withClient([silent.url], configure: configure) { etcd in
            // A read: every endpoint tried, each bounded by the request timeout. The error says so
            // (`after == 500 ms`); the elapsed time is only checked against hanging (a generous
            // bound, not a performance claim: CI machines are loaded).
            let (readError, readTook) = await measure { await etcdError { try await etcd.range(.all) } }
            #expect(readTook < .seconds(30), "a read against a silent endpoint hung for \(readTook)")
            guard case .unavailable(_, let failures)? = readError,
                case .timeout(let after, _, let endpoint)? = failures.first
            else {
                Issue.record("\(String(describing: readError))")
                return
            }
            #expect(after == .milliseconds(500) && endpoint == silent.url)
            // A write: may have been applied, so it is not retried elsewhere and says so.
            let (writeError, writeTook) = await measure { await etcdError { try await etcd.put("k", value: "v") } }
            #expect(writeTook < .seconds(30), "a write against a silent endpoint hung for \(writeTook)")
            guard case .timeout? = writeError else {
                Issue.record("\(String(describing: writeError))")
                return
            }
            // A watch is not created in time, and says so too.
            let watch = WatchRecorder(etcd.watch(.all))
            await watch.wait(within: .seconds(30), "the watch timeout") { !$0.interruptions.isEmpty }
            guard case .timeout? = watch.interruptions.first else {
                Issue.record("\(watch.interruptions)")
                return
            }
            await watch.cancel()
        }
    }

    @Test func readsFailOverPastAnEndpointThatNeverAnswers() async throws {
        let silent = try SilentTCPListener()
        defer { silent.close() }
        try await EtcdServer.with { server in
            try await withClient([silent.url, server.clientURL], configure: { $0.requestTimeout = .milliseconds(500) })
            { etcd in
                let (response, took) = try await measure { try await etcd.range(.all) }
                #expect(response.kvs.isEmpty)
                #expect(took < .seconds(30), "the failover past a silent endpoint hung for \(took)")
                #expect(etcd.currentEndpoint == server.clientURL)
                try await etcd.put("k", value: "v")  // now straight to the endpoint that answered
            }
        }
    }
}
