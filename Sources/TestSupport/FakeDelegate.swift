// A fake of the plugins a plugin delegates to (its IPAM plugin), for in-process tests: ADD returns
// a configured result and registers the DEL in the caller's rollback, as `Delegate.add` does; every
// call is recorded, and what is held (ADDed, not yet DELed) can be read as a user reads host-local's
// store. ADD can fail as a delegate that reported an error (holds nothing) or as one whose outcome
// is unknown (a time-out: may hold something, so its DEL is registered).

import CNI
import Synchronization

public final class FakeDelegate: DelegateRunner {
    /// One call: the delegate's type, the command and the attachment.
    public struct Call: Hashable, Sendable, CustomStringConvertible {
        public var type: String
        public var command: Command
        public var containerID: String
        public var ifname: String
        public var description: String { "\(type) \(command.rawValue) \(containerID)/\(ifname)" }
    }

    /// How ADD fails, when it does.
    public enum Failure: Sendable {
        /// The delegate printed its own error: it holds nothing.
        case reported(CNIError)
        /// Killed at the time-out or crashed: it may hold an address, so its DEL is registered.
        case unknownOutcome(CNIError)
    }

    struct State {
        var result: Result
        var addFailure: Failure?
        var delError: CNIError?
        var calls: [Call] = []
        var held: [String] = []
    }

    let state: Mutex<State>

    public init(result: Result, addFailure: Failure? = nil, delError: CNIError? = nil) {
        state = Mutex(State(result: result, addFailure: addFailure, delError: delError))
    }

    /// Every call so far, in order.
    public var calls: [Call] { state.withLock { $0.calls } }
    /// The attachments ("containerID/ifname") ADDed and not DELed since.
    public var held: [String] { state.withLock { $0.held } }

    /// The result of the next ADDs.
    public func setResult(_ result: Result) { state.withLock { $0.result = result } }

    public func add(_ type: String, request: Request, stdin: [UInt8]?, undo: inout Rollback) throws(CNIError) -> Result
    {
        let key = "\(request.env.containerID)/\(request.env.ifname)"
        let (failure, result) = state.withLock { s in
            s.calls.append(
                Call(type: type, command: .add, containerID: request.env.containerID, ifname: request.env.ifname))
            if case .reported? = s.addFailure {} else if !s.held.contains(key) { s.held.append(key) }
            return (s.addFailure, s.result)
        }
        if case .reported(let e)? = failure { throw e }
        undo.add("release through \(type) DEL") { try self.run(type, command: .del, request: request, stdin: stdin) }
        if case .unknownOutcome(let e)? = failure { throw e }
        return result
    }

    public func run(_ type: String, command: Command, request: Request, stdin: [UInt8]?) throws(CNIError) {
        let key = "\(request.env.containerID)/\(request.env.ifname)"
        try state.withLock { (s: inout State) throws(CNIError) in
            s.calls.append(
                Call(type: type, command: command, containerID: request.env.containerID, ifname: request.env.ifname))
            guard command == .del else { return }
            if let e = s.delError { throw e }
            s.held.removeAll { $0 == key }
        }
    }
}
