// Running commands and the built plugin binaries from tests, exactly as a runtime would.

import Foundation

public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `argv` with `env` (added to a minimal PATH) and `stdin`, and waits for it.
@discardableResult
public func run(
    _ argv: [String], env: [String: String] = [:], stdin: String = "",
    inheritEnvironment: Bool = false
) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: argv[0].hasPrefix("/") ? argv[0] : "/usr/bin/env")
    p.arguments = argv[0].hasPrefix("/") ? Array(argv.dropFirst()) : argv
    var environment = inheritEnvironment ? ProcessInfo.processInfo.environment : [:]
    environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    environment.merge(env) { $1 }
    p.environment = environment
    let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
    p.standardInput = inPipe
    p.standardOutput = outPipe
    p.standardError = errPipe
    try p.run()
    inPipe.fileHandleForWriting.write(Data(stdin.utf8))
    try inPipe.fileHandleForWriting.close()
    // Read both pipes before waiting so a chatty child cannot block on a full pipe.
    let group = DispatchGroup()
    nonisolated(unsafe) var out = Data(), err = Data()
    DispatchQueue.global().async(group: group) { out = outPipe.fileHandleForReading.readDataToEndOfFile() }
    DispatchQueue.global().async(group: group) { err = errPipe.fileHandleForReading.readDataToEndOfFile() }
    group.wait()
    p.waitUntilExit()
    return CommandResult(
        status: p.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
        stderr: String(decoding: err, as: UTF8.self))
}

/// Runs a shell command line and returns its stdout; throws when it exits non-zero.
@discardableResult
public func sh(_ line: String) throws -> String {
    let r = try run(["/bin/sh", "-c", line])
    guard r.status == 0 else { throw TestFailure("`\(line)` exited \(r.status): \(r.stderr)") }
    return r.stdout
}

/// Writes an executable file from a child process, so that it is never open for writing in this
/// process: a concurrent test's fork would inherit that descriptor until its exec, and exec'ing the
/// file meanwhile fails with ETXTBSY ("Text file busy").
public func writeExecutable(_ path: String, _ text: String) throws {
    let r = try run(["/bin/sh", "-c", "cat > \"$0\" && chmod 0755 \"$0\"", path], stdin: text)
    guard r.status == 0 else { throw TestFailure("writing \(path): \(r.stderr)") }
}

/// Copies an executable with cp(1), for the reason `writeExecutable` gives.
public func copyExecutable(_ source: String, to destination: String) throws {
    let r = try run(["/bin/cp", source, destination])
    guard r.status == 0 else { throw TestFailure("copying \(source) to \(destination): \(r.stderr)") }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
