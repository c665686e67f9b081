// A clock that moves only when a test moves it, for services that wait (a lease renewal hours
// away, a repair every 10 s): the test waits until the service sleeps (`waitForSleepers`), then
// advances the clock past the deadline, and the sleep ends at once. No wall-clock time passes.

import Synchronization

public final class ManualClock: Clock, Sendable {
    public struct Instant: InstantProtocol {
        /// Time since the clock was made.
        public var offset: Duration
        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    private struct Sleeper {
        let deadline: Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Int: Sleeper] = [:]
        var nextID = 0
        var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())

    public init() {}

    public var now: Instant { state.withLock { $0.now } }
    public var minimumResolution: Duration { .zero }

    /// Tasks sleeping on this clock now.
    public var sleepers: Int { state.withLock { $0.sleepers.count } }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = state.withLock { s -> Int in
            defer { s.nextID += 1 }
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                state.withLock { s in
                    if Task.isCancelled {
                        c.resume(throwing: CancellationError())
                    } else if deadline <= s.now {
                        c.resume()
                    } else {
                        s.sleepers[id] = Sleeper(deadline: deadline, continuation: c)
                        Self.signal(&s)
                    }
                }
            }
        } onCancel: {
            state.withLock { s in s.sleepers.removeValue(forKey: id)?.continuation.resume(throwing: CancellationError())
            }
        }
    }

    /// Moves the clock on; every sleep whose deadline has come ends.
    public func advance(by duration: Duration) {
        state.withLock { s in
            s.now = s.now.advanced(by: duration)
            for (id, sleeper) in s.sleepers where sleeper.deadline <= s.now {
                s.sleepers[id] = nil
                sleeper.continuation.resume()
            }
        }
    }

    /// Returns once at least `count` tasks sleep on this clock.
    public func waitForSleepers(_ count: Int = 1) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            state.withLock { s in
                if s.sleepers.count >= count { c.resume() } else { s.waiters.append((count, c)) }
            }
        }
    }

    private static func signal(_ s: inout State) {
        let n = s.sleepers.count
        s.waiters.removeAll { w in
            guard n >= w.count else { return false }
            w.continuation.resume()
            return true
        }
    }
}
