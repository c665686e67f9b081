// podnetctl: what an operator asks of a node's pod network, in one command. `status` and `check`
// put every lease in etcd next to the kernel state this node has for it (as podnetd's reconcile
// judges it: NodeCheck and Overlay's inspection), `leases` lists the cluster's leases, `ipam` reads
// and cleans the host-local store. It reads podnetd's flags and FLANNELD_* variables for etcd and
// the interface, so on a node it needs no arguments beyond what the daemon's unit already sets.
//
// Exit status, for monitoring and scripts: 0 all is consistent, 1 drift or leaks found, 2 cannot
// tell (etcd unreachable within --timeout, no config, no permission to read the kernel).

import ArgumentParser
import PodnetctlIPAM

@main
struct Podnetctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "podnetctl", abstract: "See, check and repair a node's pod network.",
        version: "podnetctl 0.9.0",
        subcommands: [Status.self, Check.self, Leases.self, IPAMCommand.self])

    /// Go's single-dash long flags (`-etcd-endpoints=...`, as in flanneld's units) become
    /// double-dash ones: podnetctl has no short flag but `-h`.
    static func main() async {
        let arguments = CommandLine.arguments.dropFirst().map { a in
            a.hasPrefix("-") && !a.hasPrefix("--") && a.count > 2 ? "-" + a : a
        }
        await main(Array(arguments))
    }
}
