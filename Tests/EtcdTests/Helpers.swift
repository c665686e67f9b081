// Shared by the etcd tests: a client for a test server, and a recorder that consumes a watch in the
// background so tests can wait for what it delivered.

import Etcd
import Synchronization
import TestSupport
import Testing

/// Runs `body` with a client for `endpoints`, shutting the client down afterwards.
func withClient<T>(
    _ endpoints: [String], configure: (inout EtcdClient.Configuration) -> Void = { _ in },
    _ body: (EtcdClient) async throws -> T
) async throws -> T {
    var configuration = EtcdClient.Configuration(endpoints: endpoints)
    configuration.requestTimeout = .seconds(3)
    configure(&configuration)
    let client = try EtcdClient(configuration: configuration)
    do {
        let result = try await body(client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}

/// Runs `body` with a fresh etcd and a client for it.
func withEtcd<T>(
    _ options: EtcdServer.Options = .init(),
    configure: (inout EtcdClient.Configuration) -> Void = { _ in },
    _ body: (EtcdServer, EtcdClient) async throws -> T
) async throws -> T {
    try await EtcdServer.with(options) { server in
        try await withClient([server.clientURL], configure: configure) { client in try await body(server, client) }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
func eventually(within timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// Iterates a watch in a background task and keeps everything it delivered.
final class WatchRecorder: Sendable {
    private final class Log: Sendable {
        let state = Mutex<(updates: [WatchUpdate], end: Result<Void, EtcdError>?)>(([], nil))
    }

    private let log = Log()
    private let task: Task<Void, Never>

    init(_ watch: EtcdWatch) {
        task = Task { [log] in
            do {
                for try await update in watch {
                    log.state.withLock { $0.updates.append(update) }
                }
                log.state.withLock { $0.end = .success(()) }
            } catch {
                log.state.withLock { $0.end = .failure(error as? EtcdError ?? .cancelled) }
            }
        }
    }

    deinit { task.cancel() }

    var updates: [WatchUpdate] { log.state.withLock { $0.updates } }
    /// How the sequence ended: nil while it runs.
    var end: Result<Void, EtcdError>? { log.state.withLock { $0.end } }

    var events: [WatchEvent] {
        updates.flatMap { update -> [WatchEvent] in
            if case .events(let events, _) = update { return events }
            return []
        }
    }

    var interruptions: [EtcdError] {
        updates.compactMap { update in
            if case .interrupted(let error) = update { return error }
            return nil
        }
    }

    /// Waits until `condition` holds for the recorder, or fails the test after `timeout`.
    func wait(
        within timeout: Duration = .seconds(10), _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation, until condition: (WatchRecorder) -> Bool
    ) async {
        let held = await eventually(within: timeout) { condition(self) }
        #expect(
            held, "timed out waiting for \(what); updates: \(updates), end: \(String(describing: end))",
            sourceLocation: sourceLocation)
    }

    func cancel() async {
        task.cancel()
        await task.value
    }
}

extension WatchEvent {
    /// `PUT key=value@rev` or `DELETE key@rev`, for comparing sequences in tests.
    var summary: String {
        switch kind {
        case .put: "PUT \(kv.keyString)=\(kv.valueString)@\(kv.modRevision)"
        case .delete: "DELETE \(kv.keyString)@\(kv.modRevision)"
        }
    }
}

/// The time `body` takes.
func measure<T>(_ body: () async throws -> T) async rethrows -> (T, Duration) {
    let start = ContinuousClock.now
    let result = try await body()
    return (result, ContinuousClock.now - start)
}

/// The error `body` throws, or nil (and a test failure) when it does not throw an EtcdError.
func etcdError<T>(
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> T
) async -> EtcdError? {
    do {
        let value = try await body()
        Issue.record("expected an EtcdError, got \(value)", sourceLocation: sourceLocation)
        return nil
    } catch let error as EtcdError {
        return error
    } catch {
        Issue.record("expected an EtcdError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
