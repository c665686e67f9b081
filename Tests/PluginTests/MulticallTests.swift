// The plugins' one executable, podnet-cni, as it is built and installed: the plugin names are hard
// links of one file, it runs the plugin named by argv[0], refuses any other name with a CNI error,
// and a copy of it made by a runtime under a plugin's name is a complete plugin that executes its
// delegates (it is not the file they are hard links of).

import Foundation
import TestSupport
import Testing

private let pluginNames = ["bridge", "host-local", "loopback", "portmap", "flannel"]

/// The repository's root, for scripts/install.sh.
private let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// Device and inode of `path` (following symbolic links), and its count of hard links.
private func identity(_ path: String) throws -> (dev: UInt64, ino: UInt64, links: UInt64) {
    var st = stat()
    guard stat(path, &st) == 0 else { throw TestFailure("stat \(path): errno \(errno)") }
    return (
        UInt64(truncatingIfNeeded: st.st_dev), UInt64(truncatingIfNeeded: st.st_ino),
        UInt64(truncatingIfNeeded: st.st_nlink)
    )
}

/// Runs `binary` as a runtime would, but with argv[0] set to `name` (bash's `exec -a`) and nothing
/// on stdin (it may exit before reading it); returns the exit status and stdout parsed as a JSON
/// object.
private func runAs(_ name: String, _ binary: String, command: String = "VERSION") throws -> (
    status: Int32, json: [String: Any], text: String
) {
    let r = try run(
        ["/bin/bash", "-c", "exec -a \"$0\" \"$1\"", name, binary],
        env: ["CNI_COMMAND": command, "CNI_PATH": "/nonexistent"])
    let json = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] ?? [:]
    return (r.status, json, r.stdout + r.stderr)
}

@Suite struct MulticallTests {
    /// scripts/build.sh leaves podnet-cni and the five plugin names as one inode.
    @Test func thePluginNamesAreHardLinksOfOneFile() throws {
        let one = try identity(pluginDirectory + "/podnet-cni")
        for name in pluginNames {
            let id = try identity(pluginDirectory + "/" + name)
            #expect(id.dev == one.dev && id.ino == one.ino, "\(name) is not a hard link of podnet-cni")
        }
        #expect(one.links >= 6)
    }

    /// Each name answers VERSION as that plugin; the dispatch reads only argv[0]'s basename.
    @Test(arguments: pluginNames) func eachNameRunsItsPlugin(name: String) throws {
        let r = try runAs("/some/runtime/dir/" + name, pluginDirectory + "/podnet-cni")
        #expect(r.status == 0, "\(r.text)")
        #expect(r.json["supportedVersions"] is [Any])
    }

    /// Any other name, the executable's own included, is an invalid invocation: the CNI error
    /// object on stdout (code 4, invalid environment, as for an unknown CNI_COMMAND) naming every
    /// plugin it answers to, and exit status 1.
    @Test(arguments: ["podnet-cni", "ipvlan", "/opt/cni/bin/bridge.old", ""])
    func anUnknownNameIsACNIError(name: String) throws {
        let r = try runAs(name, pluginDirectory + "/podnet-cni", command: "ADD")
        #expect(r.status == 1)
        #expect(r.json["code"] as? Int == 4, "\(r.text)")
        let text = "\(r.json["msg"] ?? "") \(r.json["details"] ?? "")"
        for plugin in pluginNames { #expect(text.contains(plugin), "\(text)") }
    }

    /// scripts/install.sh installs one inode under the five names, replacing each name by a rename
    /// (nothing half-written or temporary is left), and a reinstall gives all five the new file at
    /// once. A file copied from there elsewhere still runs its plugin.
    @Test func installMakesFiveHardLinksAndACopyStillWorks() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A built folder of our own: the real podnet-cni, stand-ins for the daemon's binaries.
        let built = dir + "/built", cni = dir + "/cni", daemon = dir + "/daemon"
        try FileManager.default.createDirectory(atPath: built, withIntermediateDirectories: true)
        try copyExecutable(pluginDirectory + "/podnet-cni", to: built + "/podnet-cni")
        for p in ["podnetd", "podnetctl"] {
            try writeExecutable(built + "/" + p, "#!/bin/sh\n")
        }
        let env = [
            "PODNET_BIN_DIR": built, "CNI_BIN_DIR": cni, "PODNETD_DIR": daemon,
            "SYSTEMD_UNIT_DIR": dir + "/no-systemd", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        ]
        func install() throws -> (dev: UInt64, ino: UInt64) {
            let r = try run([repositoryRoot + "/scripts/install.sh"], env: env)
            try #require(r.status == 0, "\(r.stdout) \(r.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: cni).sorted() == pluginNames.sorted())
            let first = try identity(cni + "/bridge")
            for name in pluginNames {
                let id = try identity(cni + "/" + name)
                #expect(id.dev == first.dev && id.ino == first.ino && id.links == 5, "\(name): \(id)")
            }
            return (first.dev, first.ino)
        }
        let old = try install()
        let new = try install()
        #expect(old.ino != new.ino, "a reinstall must write a new file, never rewrite the running one")

        let copies = dir + "/copies"
        try FileManager.default.createDirectory(atPath: copies, withIntermediateDirectories: true)
        for name in ["loopback", "host-local"] {
            try copyExecutable(cni + "/" + name, to: copies + "/" + name)
            let r = try runPlugin(
                name, "VERSION", PluginCall(netns: "", path: copies), config: "", directory: copies)
            #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
            #expect(r.json["supportedVersions"] is [Any])
        }
    }
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct MulticallCopyTests {
    /// A copy of the executable named `bridge` in a folder of its own (as a runtime that copies
    /// plugins into its own directory makes) attaches and detaches a pod. Its host-local is the
    /// installed one, a different inode from the copy, so it is executed, not run in-process.
    @Test func aCopyNamedBridgeAddsAndDeletes() throws {
        try withNode(pods: 1) { node, pods in
            let dir = node.dataDir + "/copy"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try copyExecutable(pluginDirectory + "/bridge", to: dir + "/bridge")
            #expect(try identity(dir + "/bridge").ino != identity(pluginDirectory + "/host-local").ino)
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
            let call = PluginCall(containerID: "copied", netns: pods[0].path, path: dir + ":" + pluginDirectory)
            let add = try node.run("ADD", call, conf, directory: dir)
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")
            #expect(reservations(in: node.store).count == 1)
            #expect(try addresses(pods[0]).count == 1)
            let del = try node.run("DEL", call, conf, directory: dir)
            #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
        }
    }
}
