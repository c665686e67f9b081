// The `flannel` CNI meta plugin executable (a CNI plugin, not a SwiftPM package plugin).
import CNI
import Flannel

CNIMain.run(Flannel(), about: "podnet flannel plugin")
