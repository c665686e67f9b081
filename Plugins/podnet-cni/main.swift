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

// Nothing but the call below at top level: top-level code is main-actor isolated in Swift 6, and a
// global variable or closure there gets a run-time isolation check, which starts the concurrency
// runtime and libdispatch: over 1 MB more resident memory in every invocation.

/// Runs the plugin called `name`: each builds only its own plugin and the delegates it may run
/// in-process, as five separate executables did, so what start-up touches stays its own.
nonisolated func run(as name: String) -> Never {
    switch name {
    case "bridge":
        CNIMain.run(Bridge(), about: "podnet bridge plugin", delegates: ["host-local": HostLocal()])
    case "host-local":
        CNIMain.run(HostLocal(), about: "podnet host-local IPAM plugin")
    case "loopback":
        CNIMain.run(Loopback(), about: "podnet loopback plugin")
    case "portmap":
        CNIMain.run(Portmap(), about: "podnet portmap plugin")
    case "flannel":
        CNIMain.run(
            Flannel(), about: "podnet flannel plugin", delegates: ["bridge": Bridge(), "host-local": HostLocal()])
    case DeferredUnregister.helperName:
        // The bridge's DEL re-executes this file under this name to unregister the pod's interface.
        DeferredUnregister.runIfRequested()
        fallthrough
    default:
        // Not a plugin name: the invocation itself is wrong, as an unknown CNI_COMMAND is for the
        // reference's skel (code 4, invalid environment variables). Error object on stdout, exit 1.
        let error = CNIError(
            .invalidEnvironment,
            "podnet-cni run as \"\(name)\", which is not a plugin name: it runs as one of "
                + "bridge, host-local, loopback, portmap, flannel",
            details: "install it under those names, as hard links (scripts/install.sh)")
        logStderr(error.description)
        print(String(decoding: error.json(cniVersion: nil).encoded(pretty: true), as: UTF8.self))
        exit(1)
    }
}

/// The basename of argv[0].
nonisolated func invokedName() -> String {
    guard let path = CommandLine.arguments.first, let last = path.split(separator: "/").last else { return "" }
    return String(last)
}

run(as: invokedName())
