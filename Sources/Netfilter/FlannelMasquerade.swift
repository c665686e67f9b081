// podnetd's --ip-masq: flanneld's masquerade and forward rules (pkg/trafficmngr/iptables), with
// the same chains, rules and comments, so that a node can switch between flanneld and podnetd:
//   nat    POSTROUTING -> FLANNEL-POSTRTG: RETURN inside the overlay, MASQUERADE leaving it
//   filter FORWARD     -> FLANNEL-FWD:     ACCEPT to and from the overlay
// IPv4 only, as podnetd's overlay. `ensure` reads both tables and, unless every rule is in place,
// writes one iptables-restore transaction: declaring a chain in a --noflush restore flushes it, so
// both chains are rewritten whole, and the jumps to them are added only when missing. podnetd's
// repair loop calls it again and again; when all is in place that costs two listings.

import Addressing

/// flanneld's masquerade and forward rules for one node's `subnet` of the overlay `network`.
public struct FlannelMasquerade: Sendable {
    public let network: IPNetwork
    public let subnet: IPNetwork
    let executor: NetfilterExecutor

    public static let postroutingChain = "FLANNEL-POSTRTG"
    public static let forwardChain = "FLANNEL-FWD"
    public static let masqComment = "flanneld masq"
    public static let forwardComment = "flanneld forward"

    public init(network: IPNetwork, subnet: IPNetwork, runner: any CommandRunner = SystemCommandRunner()) {
        self.network = network
        self.subnet = subnet
        executor = NetfilterExecutor(runner: runner)
    }

    /// FLANNEL-POSTRTG (nat): leave marked traffic and traffic within the overlay alone; masquerade
    /// what leaves it from the overlay, and what enters it from elsewhere.
    public var postroutingRules: [IPTablesRule] {
        let (n, s) = (network.network.description, subnet.network.description)
        let c = ["-m", "comment", "--comment", Self.masqComment]
        return [
            ["-m", "mark", "--mark", "0x4000/0x4000"] + c + ["-j", "RETURN"],
            ["-s", s, "-d", n] + c + ["-j", "RETURN"],
            ["-s", n, "-d", s] + c + ["-j", "RETURN"],
            ["!", "-s", n, "-d", s] + c + ["-j", "RETURN"],
            ["-s", n, "!", "-d", "224.0.0.0/4"] + c + ["-j", "MASQUERADE", "--random-fully"],
            ["!", "-s", n, "-d", n] + c + ["-j", "MASQUERADE", "--random-fully"],
        ].map { IPTablesRule(chain: Self.postroutingChain, arguments: $0) }
    }

    /// FLANNEL-FWD (filter): accept forwarded traffic from and to the overlay.
    public var forwardRules: [IPTablesRule] {
        let c = ["-m", "comment", "--comment", Self.forwardComment]
        return [
            ["-s", network.network.description] + c + ["-j", "ACCEPT"],
            ["-d", network.network.description] + c + ["-j", "ACCEPT"],
        ]
        .map { IPTablesRule(chain: Self.forwardChain, arguments: $0) }
    }

    /// The jump from nat's POSTROUTING to FLANNEL-POSTRTG.
    public static let postroutingJump = IPTablesRule(
        chain: "POSTROUTING", arguments: ["-m", "comment", "--comment", masqComment, "-j", postroutingChain])
    /// The jump from filter's FORWARD to FLANNEL-FWD.
    public static let forwardJump = IPTablesRule(
        chain: "FORWARD", arguments: ["-m", "comment", "--comment", forwardComment, "-j", forwardChain])

    /// The restore script that puts the rules in place given the nat and filter tables; nil when
    /// every rule is there and FLANNEL-POSTRTG holds nothing else.
    public func restoreScript(nat: IPTablesListing, filter: IPTablesListing) -> String? {
        let natRules = Set(nat.rules), filterRules = Set(filter.rules)
        let postrouting = postroutingRules, forward = forwardRules
        let natOK =
            natRules.contains(Self.postroutingJump) && postrouting.allSatisfy(natRules.contains)
            && nat.rules.filter { $0.chain == Self.postroutingChain }.count == postrouting.count
        let forwardOK = filterRules.contains(Self.forwardJump) && forward.allSatisfy(filterRules.contains)
        if natOK && forwardOK { return nil }
        var lines = ["*nat", ":\(Self.postroutingChain) - [0:0]"] + postrouting.map { $0.line() }
        if !natRules.contains(Self.postroutingJump) { lines.append(Self.postroutingJump.line()) }
        lines += ["COMMIT", "*filter", ":\(Self.forwardChain) - [0:0]"] + forward.map { $0.line() }
        if !filterRules.contains(Self.forwardJump) { lines.append(Self.forwardJump.line()) }
        return (lines + ["COMMIT", ""]).joined(separator: "\n")
    }

    /// Installs the rules unless all are in place; returns whether it (re)wrote anything.
    /// Three processes when it writes, two when it does not.
    // iptables -w -t nat -S; iptables -w -t filter -S; iptables-restore --noflush -w
    public func ensure() throws(NetfilterError) -> Bool {
        let applied = try executor.transact(
            list: { () throws(NetfilterError) in
                (
                    nat: try executor.listIPTables(.v4, table: "nat"),
                    filter: try executor.listIPTables(.v4, table: "filter")
                )
            },
            render: { tables in
                restoreScript(nat: tables.nat, filter: tables.filter).map { .iptables(.v4, $0) }
            })
        return applied != nil
    }
}
