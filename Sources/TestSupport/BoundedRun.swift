// Running a plugin binary with a hard time limit, for inputs that once made a plugin hang: a
// regression then fails the test instead of hanging the whole test run.

import Foundation

/// As `runPlugin`, but under `timeout -s KILL <seconds>`: when the limit passes, the plugin and
/// every process it started (timeout signals its whole process group) are killed, and the
/// result has status 137. `elapsed` is how long the call took.
public func runPluginBounded(_ type: String, _ command: String, _ call: PluginCall, config: String,
                             host: TestNamespace? = nil, directory: String = pluginDirectory,
                             extraEnv: [String: String] = [:], seconds: Int = 30) throws -> (PluginResult, elapsed: Double) {
    let bin = directory + "/" + type
    guard FileManager.default.isExecutableFile(atPath: bin) else {
        throw TestFailure("plugin binary \(bin) not found: build it first (scripts/test.sh does)")
    }
    var env = call.environment
    env["CNI_COMMAND"] = command
    env.merge(extraEnv) { $1 }
    let argv = ["/usr/bin/timeout", "-s", "KILL", String(seconds)]
        + (host.map { ["/usr/sbin/ip", "netns", "exec", $0.name, bin] } ?? [bin])
    let started = Date()
    let r = try run(argv, env: env, stdin: config)
    return (PluginResult(status: r.status, stdout: r.stdout, stderr: r.stderr), Date().timeIntervalSince(started))
}
