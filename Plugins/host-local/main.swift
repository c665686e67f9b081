// The host-local CNI plugin: IPAM from address ranges, reservations kept on this host.
import CNI
import HostLocal

CNIMain.run(HostLocal(), about: "podnet host-local IPAM plugin")
