// The `loopback` CNI plugin executable (a CNI plugin, not a SwiftPM package plugin).
import CNI
import Loopback

CNIMain.run(Loopback(), about: "podnet loopback plugin")
