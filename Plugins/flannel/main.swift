// The `flannel` CNI meta plugin executable (a CNI plugin, not a SwiftPM package plugin).
// bridge and host-local are compiled in: when the binaries of those names in CNI_PATH are from
// this same build, they run in-process instead of as two more processes per pod.
import Bridge
import CNI
import Flannel
import HostLocal
import PluginKernel

// The in-process bridge's DEL re-executes this binary to unregister the pod's interface.
DeferredUnregister.runIfRequested()
CNIMain.run(
    Flannel(), about: "podnet flannel plugin",
    delegates: ["bridge": Bridge(), "host-local": HostLocal()])
