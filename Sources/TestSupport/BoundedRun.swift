// Running a plugin binary with a hard time limit, for inputs that once made a plugin hang: a
// regression then fails the test instead of hanging the whole test run.

import Foundation

/// As `runPlugin`, but under `timeout -s KILL <seconds>`: when the limit passes, the plugin and
/// every process it started (timeout signals its whole process group) are killed, and the
/// result has status 137. `elapsed` is how long the call took.
public func runPluginBounded(_ type: String, _ command: String, _ call: PluginCall, config: String,
                             host: TestNamespace? = nil, directory: String = pluginDirectory,
                             extraEnv: [String: String] = [:], seconds: Int = 30) throws -> (PluginResult, elapsed: Double) {
    let started = Date()
    let r = try runPlugin(type, command, call, config: config, host: host, directory: directory,
                          extraEnv: extraEnv, timeLimit: seconds)
    return (r, Date().timeIntervalSince(started))
}
