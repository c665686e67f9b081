// The `bridge` CNI plugin executable (a CNI plugin, not a SwiftPM package plugin).
import Bridge
import CNI

CNIMain.run(Bridge(), about: "podnet bridge plugin")
