// The portmap plugin's iptables layout, rendered as `iptables-restore --noflush` scripts. Pure
// functions over strings and listings; `HostPorts` runs them.
//
// In table nat of each family that has a container address (the reference's layout, §4.3):
//   PREROUTING, OUTPUT   -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//   POSTROUTING (top)    -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
//   CNI-HOSTPORT-MASQ    -m mark --mark 0x2000/0x2000 -j MASQUERADE
//   CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//   CNI-HOSTPORT-DNAT    -p tcp -m comment --comment "dnat name: \"<net>\" id: \"<cid>\"" -m multiport
//                          --dports 80,443 [conditions] -j CNI-DN-<hash>        (per protocol, <= 15 ports)
//   CNI-DN-<hash>        per mapping: mark hairpin (-s <container subnet>) and localhost (-s 127.0.0.1,
//                          v4) traffic for masquerading, then -j DNAT --to-destination <ip>:<port>
// The container's chain is named after network and container ID, and its entry rules are the
// only rules that jump to it: teardown finds everything from the names alone, with no port list.
//
// Setup is one read (`iptables -S -t nat`) and one restore script. The shared chains and rules
// are added only where the listing lacks them; a shared chain is created with `-N`, never with a
// `:CHAIN` declaration, which would flush another container's rules. Two ADDs racing to create
// the same chain make one restore fail as a whole ("Chain already exists"); `HostPorts` re-reads
// and retries. The container's own chain is declared (`:CNI-DN-... - [0:0]`: created, or flushed
// and rewritten), so a repeated setup converges on exactly one copy of its rules.

import Addressing

/// The iptables rules of one container in one family.
public struct IPTablesPortmap: Hashable, Sendable {
    public var family: IPFamily
    public var forwarding: PortForwarding
    /// CNI-DN-<hash>
    public var chain: String
    /// `dnat name: "<net>" id: "<cid>"`
    public var comment: String

    public init(family: IPFamily, forwarding: PortForwarding) {
        self.family = family
        self.forwarding = forwarding
        chain = PortmapNames.containerChain(network: forwarding.network, containerID: forwarding.containerID)
        comment = PortmapNames.dnatComment(network: forwarding.network, containerID: forwarding.containerID)
    }

    /// Where hairpin and localhost traffic goes to be marked.
    var setMarkTarget: String { forwarding.externalSetMarkChain ?? PortmapNames.setMarkChain }

    /// The rules in CNI-HOSTPORT-DNAT that send this container's host ports to its chain: one per
    /// protocol (sorted) and group of 15 ports (multiport's limit), in mapping order. As in the
    /// reference, every mapping's port is listed in every family, whatever its host IP.
    public func entryRules() -> [IPTablesRule] {
        var byProto: [String: [Int]] = [:]
        for m in forwarding.mappings { byProto[m.proto, default: []].append(m.hostPort) }
        var out: [IPTablesRule] = []
        for proto in byProto.keys.sorted() {
            let ports = byProto[proto]!
            for start in stride(from: 0, to: ports.count, by: 15) {
                let list = ports[start..<min(start + 15, ports.count)].map(String.init).joined(separator: ",")
                out.append(
                    IPTablesRule(
                        chain: PortmapNames.dnatChain,
                        arguments: [
                            "-p", proto, "-m", "comment", "--comment", comment, "-m", "multiport", "--dports", list,
                        ]
                            + forwarding.conditions(family) + ["-j", chain]))
            }
        }
        return out
    }

    /// The container's chain: per mapping of this family, the hairpin mark (source = the
    /// container's subnet, or everything with masqAll), the localhost mark (v4, not masqAll) and
    /// the DNAT, in that order. Written the way `iptables -S` prints them.
    public func chainRules(container: IPNetwork) -> [IPTablesRule] {
        var out: [IPTablesRule] = []
        for m in forwarding.mappings where m.applies(to: family) {
            let base =
                (m.destination.map { ["-d", "\($0)/\(family.bitWidth)"] } ?? [])
                + ["-p", m.proto, "-m", m.proto, "--dport", String(m.hostPort)]
            if forwarding.snat {
                let source = forwarding.masqAll ? (family == .v4 ? "0.0.0.0/0" : "::/0") : container.network.description
                out.append(IPTablesRule(chain: chain, arguments: ["-s", source] + base + ["-j", setMarkTarget]))
                if family == .v4 && !forwarding.masqAll {
                    out.append(
                        IPTablesRule(chain: chain, arguments: ["-s", "127.0.0.1/32"] + base + ["-j", setMarkTarget]))
                }
            }
            let to =
                family == .v4 ? "\(container.address):\(m.containerPort)" : "[\(container.address)]:\(m.containerPort)"
            out.append(IPTablesRule(chain: chain, arguments: base + ["-j", "DNAT", "--to-destination", to]))
        }
        return out
    }

    /// The shared chains this container needs, in creation order.
    public var sharedChains: [String] {
        (forwarding.snat && forwarding.externalSetMarkChain == nil
            ? [PortmapNames.setMarkChain, PortmapNames.masqChain] : []) + [PortmapNames.dnatChain]
    }

    /// The shared rules this container needs; `prepend` ones go to the top of their chain.
    public var sharedRules: [(rule: IPTablesRule, prepend: Bool)] {
        var out: [(IPTablesRule, Bool)] = []
        if forwarding.snat && forwarding.externalSetMarkChain == nil {
            let mark = PortmapNames.mark(bit: forwarding.markMasqBit)
            out.append(
                (
                    IPTablesRule(
                        chain: PortmapNames.setMarkChain,
                        arguments: [
                            "-m", "comment", "--comment", PortmapNames.setMarkComment, "-j", "MARK", "--set-xmark",
                            mark,
                        ]), false
                ))
            out.append(
                (
                    IPTablesRule(
                        chain: PortmapNames.masqChain, arguments: ["-m", "mark", "--mark", mark, "-j", "MASQUERADE"]),
                    false
                ))
            out.append(
                (
                    IPTablesRule(
                        chain: "POSTROUTING",
                        arguments: [
                            "-m", "comment", "--comment", PortmapNames.masqComment, "-j", PortmapNames.masqChain,
                        ]), true
                ))
        }
        for entry in ["PREROUTING", "OUTPUT"] {
            out.append(
                (
                    IPTablesRule(
                        chain: entry,
                        arguments: ["-m", "addrtype", "--dst-type", "LOCAL", "-j", PortmapNames.dnatChain]), false
                ))
        }
        return out
    }

    /// The setup transaction given the whole nat table: missing shared chains and rules, the
    /// container's chain rewritten, its old entry rules replaced by new ones at the top of
    /// CNI-HOSTPORT-DNAT (the latest container to claim a host port wins, as in the reference).
    public func setupScript(container: IPNetwork, table: IPTablesListing) -> String {
        let have = Set(table.rules.map(\.key))
        var lines = ["*nat"]
        lines += sharedChains.filter { !table.chains.contains($0) }.map { "-N \($0)" }
        for (rule, prepend) in sharedRules where !have.contains(rule.key) {
            lines.append(prepend ? Self.insertLine(rule) : rule.line())
        }
        lines.append(":\(chain) - [0:0]")
        lines += chainRules(container: container).map { $0.line() }
        lines += table.rules.filter { $0.target == chain }.map { $0.line("-D") }
        // Each inserted at the top in turn, like the reference's repeated InsertUnique(prepend).
        lines += entryRules().map(Self.insertLine)
        return (lines + ["COMMIT", ""]).joined(separator: "\n")
    }

    /// What is missing for this container in `table` (the whole nat table), or nil when every
    /// rule is in place: the container's chain and rules, its entry rules, and the shared rules
    /// that traffic needs to reach them.
    public func missingRule(container: IPNetwork, in table: IPTablesListing) -> String? {
        guard table.chains.contains(chain) else { return "chain \(chain) not found in iptables table nat" }
        let have = Set(table.rules.map(\.key))
        let wanted = chainRules(container: container) + entryRules() + sharedRules.map(\.rule)
        for rule in wanted where !have.contains(rule.key) {
            return "rule \"\(rule.line())\" not found in table nat"
        }
        return nil
    }

    static func insertLine(_ rule: IPTablesRule) -> String {
        IPTablesRule(chain: rule.chain, arguments: ["1"] + rule.arguments).line("-I")
    }

    /// Removes `chains` (containers' chains) and every rule that jumps to them, from any chain;
    /// nil when none of them exists. Each chain is declared first, which flushes it (and creates
    /// it if only a dangling jump is left), so `-X` never fails on a non-empty chain.
    public static func teardownScript(chains: [String], table: IPTablesListing) -> String? {
        let present = chains.filter { c in table.chains.contains(c) || table.rules.contains { $0.target == c } }
        guard !present.isEmpty else { return nil }
        var lines = ["*nat"] + present.map { ":\($0) - [0:0]" }
        lines += table.rules.filter { $0.target.map(present.contains) ?? false }.map { $0.line("-D") }
        lines += present.map { "-X \($0)" }
        return (lines + ["COMMIT", ""]).joined(separator: "\n")
    }

    /// The UDP host ports that `chain`'s DNAT rules forward, for the conntrack clean-up.
    public static func udpPorts(chain: String, table: IPTablesListing) -> [Int] {
        var out: [Int] = []
        for rule in table.rules where rule.chain == chain && rule.target == "DNAT" && rule.value(of: "-p") == "udp" {
            if let p = rule.value(of: "--dport").flatMap({ Int($0) }), !out.contains(p) { out.append(p) }
        }
        return out
    }

    /// The containers' chains of `network` whose container ID is not in `validContainerIDs`:
    /// found through the entry rules' comments, kept only when the chain name is the hash of
    /// exactly that network and container.
    public static func staleChains(network: String, validContainerIDs: Set<String>, table: IPTablesListing) -> [String]
    {
        let prefix = "dnat name: \"\(network)\" id: \""
        var out: [String] = []
        for rule in table.rules where rule.chain == PortmapNames.dnatChain {
            guard let c = rule.comment, c.hasPrefix(prefix), c.hasSuffix("\""), c.count > prefix.count else { continue }
            let id = String(c.dropFirst(prefix.count).dropLast())
            guard !validContainerIDs.contains(id), let target = rule.target,
                target == PortmapNames.containerChain(network: network, containerID: id),
                !out.contains(target)
            else { continue }
            out.append(target)
        }
        return out
    }
}

// MARK: - Comparing rules as iptables prints them

extension IPTablesRule {
    /// The chain and the rule's matches and target as an order-free key, normalised the way
    /// `iptables -S` prints a rule, so a rule as written (or as the reference writes it) compares
    /// equal to its listing: addresses masked and given a prefix (10.0.0.2/24 -> 10.0.0.0/24,
    /// 127.0.0.1 -> 127.0.0.1/32), match-anything addresses dropped, long option names shortened
    /// (--destination-ports -> --dports), the implicit `-m tcp|udp|sctp` dropped, protocols in
    /// lower case. Each option with its `!` and arguments is one element; elements are sorted.
    var key: [String] {
        var groups: [String] = []
        var i = 0
        let a = arguments
        func isOption(_ t: String) -> Bool {
            guard t.count > 1, t.hasPrefix("-") else { return false }
            return !t.dropFirst().first!.isNumber
        }
        while i < a.count {
            var g: [String] = []
            if a[i] == "!" { g.append("!"); i += 1 }
            guard i < a.count else { break }
            g.append(Self.longOptions[a[i]] ?? a[i])
            i += 1
            if g.last == "--comment" {
                if i < a.count { g.append(a[i]); i += 1 }
            } else {
                while i < a.count, a[i] != "!", !isOption(a[i]) { g.append(a[i]); i += 1 }
            }
            if let n = Self.normalized(g) { groups.append(n.joined(separator: " ")) }
        }
        return [chain] + groups.sorted()
    }

    static let longOptions = [
        "--source": "-s", "--destination": "-d", "--protocol": "-p", "--jump": "-j", "--goto": "-g",
        "--match": "-m", "--in-interface": "-i", "--out-interface": "-o",
        "--destination-ports": "--dports", "--source-ports": "--sports",
        "--destination-port": "--dport", "--source-port": "--sport",
    ]

    /// One option group as `iptables -S` prints it; nil when it prints nothing.
    static func normalized(_ g: [String]) -> [String]? {
        let negated = g.first == "!"
        let body = negated ? Array(g.dropFirst()) : g
        guard let option = body.first else { return nil }
        var out = body
        switch option {
        case "-s", "-d":
            guard body.count == 2 else { break }
            let text = body[1]
            let net =
                IPNetwork(text) ?? IPAddress(text).flatMap { IPNetwork(address: $0, prefixLength: $0.family.bitWidth) }
            if let net {
                if net.prefixLength == 0 && !negated { return nil }
                out[1] = net.network.description
            }
        case "-p" where body.count == 2:
            let p = body[1].lowercased()
            out[1] = ["6": "tcp", "17": "udp", "132": "sctp"][p] ?? p
        case "-m" where body.count == 2 && ["tcp", "udp", "sctp"].contains(body[1].lowercased()):
            return nil
        default:
            break
        }
        return negated ? ["!"] + out : out
    }
}
