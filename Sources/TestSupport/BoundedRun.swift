// Running a plugin binary with a hard time limit, for inputs that once made a plugin hang: a
// regression then fails the test instead of hanging the whole test run.

/// `runPlugin` under a hard time limit (`timeout -s KILL`): when it passes, the plugin and every
/// process it started are killed, and the result has status 137.
public func runPluginBounded(
    _ type: String, _ command: String, _ call: PluginCall, config: String,
    host: TestNamespace? = nil, directory: String = pluginDirectory,
    extraEnv: [String: String] = [:], seconds: Int = 30
) throws -> PluginResult {
    try runPlugin(
        type, command, call, config: config, host: host, directory: directory, extraEnv: extraEnv,
        timeLimit: seconds)
}
