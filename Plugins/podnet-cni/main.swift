// `podnet-cni`: every podnet CNI plugin in one executable (a CNI plugin, not a SwiftPM package
// plugin). It is installed as hard links named bridge, host-local, loopback, portmap and flannel,
// and runs the plugin named by the file it was started as (the basename of argv[0]), as busybox
// does. One copy of the Swift runtime, libnl and the CNI core on disk instead of five, and a
// delegate (bridge's host-local, flannel's bridge) found in CNI_PATH as a hard link of this very
// file runs in-process (see Delegate).
import Bridge
import CNI
import Flannel
import HostLocal
import Loopback
import PluginKernel
import Portmap

#if canImport(Glibc)
    import Glibc
#endif

/// The plugins this executable answers to, by CNI type, with the text each prints when run by hand.
let plugins: [(type: String, plugin: any CNIPlugin, about: String)] = [
    ("bridge", Bridge(), "podnet bridge plugin"),
    ("host-local", HostLocal(), "podnet host-local IPAM plugin"),
    ("loopback", Loopback(), "podnet loopback plugin"),
    ("portmap", Portmap(), "podnet portmap plugin"),
    ("flannel", Flannel(), "podnet flannel plugin"),
]

let invokedAs = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""

// The bridge's DEL re-executes this file under this name to unregister the pod's interface.
if invokedAs == DeferredUnregister.helperName { DeferredUnregister.runIfRequested() }

guard let entry = plugins.first(where: { $0.type == invokedAs }) else {
    // Not a plugin name: the invocation itself is wrong, as an unknown CNI_COMMAND is for the
    // reference's skel (code 4, invalid environment variables). Error object on stdout, exit 1.
    let names = plugins.map(\.type).joined(separator: ", ")
    let error = CNIError(
        .invalidEnvironment,
        "podnet-cni run as \"\(invokedAs)\", which is not a plugin name: it runs as one of \(names)",
        details: "install it under those names, as hard links (scripts/install.sh)")
    logStderr(error.description)
    print(String(decoding: error.json(cniVersion: nil).encoded(pretty: true), as: UTF8.self))
    exit(1)
}
CNIMain.run(
    entry.plugin, about: entry.about,
    delegates: Dictionary(uniqueKeysWithValues: plugins.map { ($0.type, $0.plugin) }))
