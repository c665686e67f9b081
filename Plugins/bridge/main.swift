// The `bridge` CNI plugin executable (a CNI plugin, not a SwiftPM package plugin).
import Bridge
import CNI
import HostLocal
import PluginKernel

DeferredUnregister.runIfRequested()
CNIMain.run(Bridge(), about: "podnet bridge plugin", delegates: ["host-local": HostLocal()])
