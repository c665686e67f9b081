// The `portmap` CNI plugin executable (a CNI plugin, not a SwiftPM package plugin).
import CNI
import Portmap

CNIMain.run(Portmap(), about: "podnet portmap plugin")
