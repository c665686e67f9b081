/// Undo steps for a transactional ADD: each step that creates something registers how to remove
/// it; unless `commit()` is called, `run()` undoes them in reverse order.
///
///     var undo = Rollback()
///     defer { undo.runUnlessCommitted() }
///     let lease = try ipam.add(config); undo.add("release IP") { try ipam.del(config) }
///     ...
///     undo.commit()
public struct Rollback {
    private var steps: [(what: String, body: () throws -> Void)] = []
    private var committed = false

    public init() {}

    public mutating func add(_ what: String, _ body: @escaping () throws -> Void) {
        steps.append((what, body))
    }

    public mutating func commit() { committed = true }

    /// Runs every undo step, newest first; a failing step is logged and the rest still run.
    public mutating func runUnlessCommitted() {
        guard !committed else { return }
        for step in steps.reversed() {
            do { try step.body() } catch { logStderr("rollback: \(step.what) failed: \(error)") }
        }
        steps.removeAll()
    }
}
