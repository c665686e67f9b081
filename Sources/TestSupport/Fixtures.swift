// Network configurations and checks shared by the plugin tests.

import Foundation

/// A bridge + host-local network config in `version`, with host-local's store under `dataDir`.
/// `extra` is spliced into the bridge object (e.g. `"ipMasq":true`).
public func bridgeConfig(
    version: String, name: String = "podnet-test", bridge: String = "cni0",
    subnet: String = "10.88.0.0/24", dataDir: String, extra: String = ""
) -> String {
    """
    {"cniVersion":"\(version)","name":"\(name)","type":"bridge","bridge":"\(bridge)","isGateway":true\(extra.isEmpty ? "" : "," + extra),
     "ipam":{"type":"host-local","dataDir":"\(dataDir)","ranges":[[{"subnet":"\(subnet)"}]],"routes":[{"dst":"0.0.0.0/0"}]}}
    """
}

/// A fresh temporary directory, removed by the caller.
public func temporaryDirectory() throws -> String {
    let d = NSTemporaryDirectory() + "podnet-test-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

/// Files in a directory (empty when it does not exist).
public func files(in dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
}

/// Reservation files of host-local's store: everything but `lock` and `last_reserved_ip.*`.
public func reservations(in dir: String) -> [String] {
    files(in: dir).filter { $0 != "lock" && !$0.hasPrefix("last_reserved_ip") }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass; returns whether it held.
/// For state the kernel finishes after the call returns (a link unregistered in the background).
public func eventually(within seconds: Double = 3, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    repeat {
        if try condition() { return true }
        usleep(20_000)
    } while Date() < deadline
    return try condition()
}
