// An in-memory lease registry with etcd's semantics, as far as the overlay relies on them:
// - every change takes the next revision; a listing says its revision;
// - `create` is create-if-absent; leases from `create` and `update` with a TTL are attached to a
//   fresh lease id and expire only when a test says so (`expire`), as a deleted key;
// - a watch from revision r replays the history from r, then follows every change; from a
//   compacted revision it yields `.compacted` and ends, as etcd cancels such a watch;
// - `pauseWatches` holds deliveries back, as a watcher that falls behind: `compact()` then ends
//   every open watch with `.compacted`, and the events they missed are gone.
// Keys live under `<prefix>/subnets/` like etcd's, so keys and values that are not leases can be
// put too (`putRaw`).

import Addressing
import FoundationEssentials
import Overlay
import Synchronization

public final class InMemoryLeaseRegistry: LeaseRegistry {
    private struct Entry {
        var value: Data
        var leaseID: Int64?
        var expiration: Date?

        init(value: Data, leaseID: Int64? = nil, expiration: Date? = nil) {
            self.value = value; self.leaseID = leaseID; self.expiration = expiration
        }

        init(_ lease: Lease) {
            self.init(value: lease.attributes.json(), leaseID: lease.etcdLease, expiration: lease.expiration)
        }
    }

    private enum Change {
        case put(key: String, Entry)
        case delete(key: String)
    }

    private struct Watcher {
        let continuation: LeaseWatch.Continuation
        /// The next revision to deliver.
        var next: Int64
    }

    private struct State {
        var config: Data?
        var entries: [String: Entry] = [:]
        var revision: Int64 = 1
        var history: [(revision: Int64, change: Change)] = []
        var compactedAt: Int64 = 0
        var nextLeaseID: Int64 = 100
        var watchers: [Int: Watcher] = [:]
        var nextWatcher = 0
        var paused = false
        var beforeCreate: (@Sendable (IPNetwork) -> Lease?)?
        var operations: [Operation] = []
        var failures: [Operation.Kind: Int] = [:]
        var waiters: [(condition: @Sendable (Snapshot) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
    }

    /// A call a node made, for tests to check and wait for.
    public struct Operation: Equatable, Sendable {
        public enum Kind: Hashable, Sendable { case create, update, delete }
        public var kind: Kind
        public var subnet: IPNetwork
        public var ttl: Duration?
    }

    /// What the registry holds, as `waitUntil` conditions see it.
    public struct Snapshot: Sendable {
        public var leases: [IPNetwork: Lease]
        public var operations: [Operation]
        public var watchers: Int
        public var revision: Int64
    }

    public let prefix: String
    private let state: Mutex<State>

    public init(config: String? = nil, prefix: String = "/coreos.com/network") {
        self.prefix = prefix
        state = Mutex(State(config: config.map { Data($0.utf8) }))
    }

    public var configKey: String { prefix + "/config" }
    var subnetsPrefix: String { prefix + "/subnets/" }
    func key(_ key: SubnetKey) -> String { subnetsPrefix + key.name }

    // MARK: What a test does

    public func setConfig(_ json: String?) { state.withLock { $0.config = json.map { Data($0.utf8) } } }

    /// Puts a lease as another node (or the operator) would; a reservation when `etcdLease` is nil.
    public func put(_ lease: Lease) {
        apply(.put(key: key(lease.key), Entry(lease)))
    }

    /// Puts any value at `<prefix>/subnets/<name>`: keys and values that are not leases.
    public func putRaw(_ name: String, value: String) {
        apply(.put(key: subnetsPrefix + name, Entry(value: Data(value.utf8))))
    }

    /// Deletes a key as another writer would: the lease whose (first) subnet is `subnet`, whatever
    /// IPv6 subnet its key carries.
    public func remove(_ subnet: IPNetwork) {
        let existing = state.withLock { s in s.entries.keys.first { SubnetKey.parse($0)?.subnet == subnet.network } }
        apply(.delete(key: existing ?? key(SubnetKey(subnet))))
    }

    /// Deletes exactly `key`.
    public func remove(_ key: SubnetKey) { apply(.delete(key: self.key(key))) }

    /// The lease's TTL runs out: its key is deleted.
    public func expire(_ subnet: IPNetwork) { remove(subnet) }

    /// The next `count` calls of `kind` fail (an etcd outage).
    public func fail(_ kind: Operation.Kind, times count: Int = 1) {
        state.withLock { $0.failures[kind, default: 0] += count }
    }

    /// Called before each `create` (with the subnet): a lease it returns is put first, another
    /// node's claim slipped in between a listing and a create.
    public func setBeforeCreate(_ hook: (@Sendable (IPNetwork) -> Lease?)?) {
        state.withLock { $0.beforeCreate = hook }
    }

    /// Holds watch deliveries back until `resumeWatches` (or `compact`).
    public func pauseWatches() { state.withLock { $0.paused = true } }

    public func resumeWatches() {
        state.withLock { s in
            s.paused = false
            Self.deliver(&s)
        }
    }

    /// Compacts the history up to the current revision and ends every watch that has not yet
    /// delivered all of it with `.compacted` (etcd cancels a watch that fell behind).
    public func compact() {
        let ended = state.withLock { s -> [LeaseWatch.Continuation] in
            s.compactedAt = s.revision
            s.history.removeAll()
            var ended: [LeaseWatch.Continuation] = []
            for (id, w) in s.watchers where w.next <= s.revision {
                w.continuation.yield(.compacted(revision: s.compactedAt))
                ended.append(w.continuation)
                s.watchers[id] = nil
            }
            s.paused = false
            Self.signal(&s)
            return ended
        }
        // Outside the lock: finishing runs the stream's onTermination, which takes it.
        for c in ended { c.finish() }
    }

    /// Every open watch reports an interruption (it carries on).
    public func interruptWatches(reason: String = "connection reset") {
        state.withLock { s in for w in s.watchers.values { w.continuation.yield(.interrupted(reason: reason)) } }
    }

    public var snapshot: Snapshot { state.withLock { Self.snapshot($0) } }

    /// Returns once `condition` holds for the registry's state (checked after every change).
    public func waitUntil(_ condition: @escaping @Sendable (Snapshot) -> Bool) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            state.withLock { s in
                if condition(Self.snapshot(s)) {
                    c.resume()
                } else {
                    s.waiters.append((condition, c))
                }
            }
        }
    }

    // MARK: LeaseRegistry

    public func config() async throws -> Data? { state.withLock { $0.config } }

    public func leases() async throws -> LeaseSnapshot {
        state.withLock { s in
            let leases = s.entries.keys.sorted().compactMap { Self.lease(key: $0, s.entries[$0]!) }
            return LeaseSnapshot(leases: leases, revision: s.revision)
        }
    }

    public func create(_ subnet: SubnetKey, _ attributes: LeaseAttributes, ttl: Duration) async throws -> Lease? {
        try record(.create, subnet.subnet, ttl)
        if let intruder = state.withLock({ $0.beforeCreate })?(subnet.subnet) { put(intruder) }
        return state.withLock { s -> Lease? in
            guard s.entries[key(subnet)] == nil else { return nil }
            s.nextLeaseID += 1
            let lease = Lease(
                key: subnet, attributes: attributes, etcdLease: s.nextLeaseID,
                expiration: Date().addingTimeInterval(Double(ttl.components.seconds)))
            Self.apply(&s, .put(key: key(subnet), Entry(lease)))
            return lease
        }
    }

    public func update(_ subnet: SubnetKey, _ attributes: LeaseAttributes, ttl: Duration?) async throws -> Lease {
        try record(.update, subnet.subnet, ttl)
        let lease = state.withLock { s -> Lease in
            guard let ttl else { return Lease(key: subnet, attributes: attributes, etcdLease: nil) }
            s.nextLeaseID += 1
            return Lease(
                key: subnet, attributes: attributes, etcdLease: s.nextLeaseID,
                expiration: Date().addingTimeInterval(Double(ttl.components.seconds)))
        }
        put(lease)
        return lease
    }

    public func delete(_ subnet: SubnetKey) async throws {
        try record(.delete, subnet.subnet, nil)
        remove(subnet)
    }

    public func watch(fromRevision revision: Int64) -> LeaseWatch {
        let (stream, continuation) = LeaseWatch.makeStream()
        let id: Int? = state.withLock { s in
            guard revision >= s.compactedAt else {
                continuation.yield(.compacted(revision: s.compactedAt))
                continuation.finish()
                return nil
            }
            let id = s.nextWatcher
            s.nextWatcher += 1
            s.watchers[id] = Watcher(continuation: continuation, next: revision)
            Self.deliver(&s)
            Self.signal(&s)
            return id
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                self?.state.withLock { s in
                    s.watchers[id] = nil
                    Self.signal(&s)
                }
            }
        }
        return stream
    }

    // MARK: Internals

    /// A failure when the test asked for one, else the call recorded.
    private func record(_ kind: Operation.Kind, _ subnet: IPNetwork, _ ttl: Duration?) throws {
        try state.withLock { s in
            if let n = s.failures[kind], n > 0 {
                s.failures[kind] = n - 1
                throw RegistryUnavailable()
            }
            s.operations.append(Operation(kind: kind, subnet: subnet.network, ttl: ttl))
            Self.signal(&s)
        }
    }

    private func apply(_ change: Change) { state.withLock { Self.apply(&$0, change) } }

    private static func apply(_ s: inout State, _ change: Change) {
        switch change {
        case .put(let key, let entry): s.entries[key] = entry
        case .delete(let key):
            guard s.entries.removeValue(forKey: key) != nil else { return }  // etcd: no event
        }
        s.revision += 1
        s.history.append((s.revision, change))
        deliver(&s)
        signal(&s)
    }

    private static func deliver(_ s: inout State) {
        guard !s.paused else { return }
        for (id, w) in s.watchers {
            var next = w.next
            for (revision, change) in s.history where revision >= next {
                w.continuation.yield(event(change, revision: revision))
                next = revision + 1
            }
            s.watchers[id]?.next = max(next, w.next)
        }
    }

    private static func event(_ change: Change, revision: Int64) -> LeaseEvent {
        switch change {
        case .delete(let key):
            guard let subnet = SubnetKey.parse(key)?.subnet else {
                return .notALease(key: key, subnet: nil, revision: revision)
            }
            return .delete(subnet, revision: revision)
        case .put(let key, let entry):
            guard let lease = lease(key: key, entry) else {
                return .notALease(key: key, subnet: SubnetKey.parse(key)?.subnet, revision: revision)
            }
            return .put(lease, revision: revision)
        }
    }

    private static func lease(key: String, _ entry: Entry) -> Lease? {
        guard let subnet = SubnetKey.parse(key), let attributes = LeaseAttributes(json: entry.value) else { return nil }
        return Lease(key: subnet, attributes: attributes, etcdLease: entry.leaseID, expiration: entry.expiration)
    }

    private static func snapshot(_ s: State) -> Snapshot {
        var leases: [IPNetwork: Lease] = [:]
        for (key, entry) in s.entries { if let l = lease(key: key, entry) { leases[l.subnet] = l } }
        return Snapshot(leases: leases, operations: s.operations, watchers: s.watchers.count, revision: s.revision)
    }

    private static func signal(_ s: inout State) {
        guard !s.waiters.isEmpty else { return }  // a snapshot parses every value
        let snap = snapshot(s)
        var waiting: [(condition: @Sendable (Snapshot) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
        for w in s.waiters {
            if w.condition(snap) { w.continuation.resume() } else { waiting.append(w) }
        }
        s.waiters = waiting
    }
}

/// The error of a registry call a test made fail.
public struct RegistryUnavailable: Error, CustomStringConvertible {
    public var description: String { "the registry is unavailable (a test said so)" }
}
