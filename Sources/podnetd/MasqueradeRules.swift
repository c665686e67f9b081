// --ip-masq: flanneld's masquerade and forward rules (pkg/trafficmngr/iptables), the same
// chains, rules and comments, so a node can switch between flanneld and podnetd:
//   nat    POSTROUTING -> FLANNEL-POSTRTG: RETURN inside the overlay, MASQUERADE leaving it
//   filter FORWARD     -> FLANNEL-FWD:     ACCEPT to and from the overlay
// Applied with one iptables-restore; re-applied by the repair loop when a rule is missing.

import Addressing
import Logging
import Netfilter

struct MasqueradeRules: Sendable {
    let network: IPNetwork
    let subnet: IPNetwork
    let logger: Logger
    let runner = SystemCommandRunner()

    static let masqComment = "\"flanneld masq\""
    static let forwardComment = "\"flanneld forward\""

    var postrouting: [String] {
        let c = "-m comment --comment \(Self.masqComment)"
        let (n, s) = (network.network, subnet.network)
        return [
            "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 \(c) -j RETURN",
            "-A FLANNEL-POSTRTG -s \(s) -d \(n) \(c) -j RETURN",
            "-A FLANNEL-POSTRTG -s \(n) -d \(s) \(c) -j RETURN",
            "-A FLANNEL-POSTRTG ! -s \(n) -d \(s) \(c) -j RETURN",
            "-A FLANNEL-POSTRTG -s \(n) ! -d 224.0.0.0/4 \(c) -j MASQUERADE --random-fully",
            "-A FLANNEL-POSTRTG ! -s \(n) -d \(n) \(c) -j MASQUERADE --random-fully",
        ]
    }

    var forward: [String] {
        let c = "-m comment --comment \(Self.forwardComment)"
        return ["-A FLANNEL-FWD -s \(network.network) \(c) -j ACCEPT", "-A FLANNEL-FWD -d \(network.network) \(c) -j ACCEPT"]
    }

    /// Installs the rules unless all are present; returns whether anything was (re)written.
    @discardableResult
    func ensure() throws -> Bool {
        let nat = try runner.run(Command("iptables", ["-w", "-t", "nat", "-S"])).stdout
        let filter = try runner.run(Command("iptables", ["-w", "-t", "filter", "-S"])).stdout
        let natJump = "-A POSTROUTING -m comment --comment \(Self.masqComment) -j FLANNEL-POSTRTG"
        let fwdJump = "-A FORWARD -m comment --comment \(Self.forwardComment) -j FLANNEL-FWD"
        let natLines = Set(nat.split(separator: "\n").map(String.init))
        let filterLines = Set(filter.split(separator: "\n").map(String.init))
        let natOK = natLines.contains(natJump) && postrouting.allSatisfy(natLines.contains)
            && nat.split(separator: "\n").filter({ $0.hasPrefix("-A FLANNEL-POSTRTG ") }).count == postrouting.count
        let fwdOK = filterLines.contains(fwdJump) && forward.allSatisfy(filterLines.contains)
        if natOK && fwdOK { return false }
        // Declaring a chain in a --noflush restore flushes it; the jumps are added once.
        var script = ["*nat", ":FLANNEL-POSTRTG - [0:0]"] + postrouting
        if !natLines.contains(natJump) { script.append(natJump) }
        script += ["COMMIT", "*filter", ":FLANNEL-FWD - [0:0]"] + forward
        if !filterLines.contains(fwdJump) { script.append(fwdJump) }
        script.append("COMMIT")
        let out = try runner.run(Command("iptables-restore", ["--noflush", "-w"], stdin: script.joined(separator: "\n") + "\n"))
        guard out.status == 0 else {
            throw NetfilterError.commandFailed(command: "iptables-restore --noflush -w", status: out.status, stderr: out.stderr)
        }
        logger.info("installed the masquerade and forward rules", metadata: ["masq.network": "\(network)", "masq.subnet": "\(subnet)"])
        return true
    }
}
