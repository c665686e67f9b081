// iptables text in and out: parsing `iptables -S` lines, and rendering `iptables-restore --noflush`
// scripts. Pure functions over strings, so the exact text is unit-tested; `Masquerade` runs them.
//
// Per attachment the reference writes, in table nat of each family that has an address:
//   -N CNI-<hash>
//   -A CNI-<hash> -d <subnet> -m comment --comment <c> -j ACCEPT
//   -A CNI-<hash> ! -d 224.0.0.0/4 (ff00::/8) -m comment --comment <c> -j MASQUERADE
//   -A POSTROUTING -s <ip>/32 (/128) -m comment --comment <c> -j CNI-<hash>
// The chain name depends only on network and container ID, so teardown can find everything by
// looking for POSTROUTING rules that jump to it, without knowing the addresses.
//
// Why restore scripts: one `iptables-restore --noflush` is one transaction (one table replace for
// iptables-legacy, one netlink batch for iptables-nft) instead of a process per rule. Declaring
// `:CHAIN - [0:0]` creates the chain, or flushes it when it exists, which makes setup idempotent
// (the chain's contents are rewritten) and lets teardown delete the chain (`-X`) whether or not
// it still exists.

import Addressing

/// One `-A CHAIN args...` line of `iptables -S` or `iptables-save`, split like a shell would.
public struct IPTablesRule: Hashable, Sendable {
    public var chain: String
    /// The arguments after `-A CHAIN`, unquoted.
    public var arguments: [String]

    public init(chain: String, arguments: [String]) {
        self.chain = chain
        self.arguments = arguments
    }

    /// Parses an `-A` line; nil for anything else (`-P`, `-N`, `:CHAIN`, comments).
    public init?(line: some StringProtocol) {
        let words = IPTablesRule.split(line)
        guard words.count >= 2, words[0] == "-A" else { return nil }
        self.init(chain: words[1], arguments: Array(words.dropFirst(2)))
    }

    /// The value after the first occurrence of `flag` (`-j`, `-s`, `--comment`).
    public func value(of flag: String) -> String? {
        guard let i = arguments.firstIndex(of: flag), i + 1 < arguments.count else { return nil }
        return arguments[i + 1]
    }

    public var target: String? { value(of: "-j") }
    public var comment: String? { value(of: "--comment") }
    /// The `-s` match, when it is a plain (not negated) address or prefix.
    public var source: IPNetwork? {
        guard let i = arguments.firstIndex(of: "-s"), i + 1 < arguments.count,
            i == 0 || arguments[i - 1] != "!"
        else { return nil }
        let s = arguments[i + 1]
        if let n = IPNetwork(s) { return n }
        return IPAddress(s).flatMap { IPNetwork(address: $0, prefixLength: $0.family.bitWidth) }
    }

    /// The rule as a restore line with `op` (`-A` or `-D`), quoted as iptables-save quotes.
    public func line(_ op: String = "-A") -> String {
        ([op, chain] + arguments.map(IPTablesRule.quoted)).joined(separator: " ")
    }

    /// Splits on blanks; double quotes group, and a backslash escapes the next character
    /// (the inverse of iptables' `xtables_save_string`).
    static func split(_ line: some StringProtocol) -> [String] {
        var words: [String] = [], word = "", inWord = false, quoted = false, escaped = false
        for c in line {
            if escaped { word.append(c); escaped = false; continue }
            switch c {
            case "\\": escaped = true; inWord = true
            case "\"": quoted.toggle(); inWord = true
            case " ", "\t", "\n", "\r":
                if quoted { word.append(c) } else if inWord { words.append(word); word = ""; inWord = false }
            default: word.append(c); inWord = true
            }
        }
        if inWord { words.append(word) }
        return words
    }

    /// Bare unless it is empty or has a blank or quote; else double-quoted with `"`, `\` and `'`
    /// escaped, as `xtables_save_string` prints a comment (and iptables-restore reads it back).
    static func quoted(_ arg: String) -> String {
        let bare = !arg.isEmpty && !arg.contains { " \t\n\"\\'".contains($0) }
        if bare { return arg }
        var out = "\""
        for c in arg {
            if c == "\"" || c == "\\" || c == "'" { out.append("\\") }
            out.append(c)
        }
        return out + "\""
    }
}

/// What `iptables -S [chain]` printed: the user-defined chains and the rules.
public struct IPTablesListing: Hashable, Sendable {
    public var chains: Set<String>
    public var rules: [IPTablesRule]

    public init(chains: Set<String> = [], rules: [IPTablesRule] = []) {
        self.chains = chains
        self.rules = rules
    }

    /// Reads `-N CHAIN` / `:CHAIN ...` declarations and `-A` rules; ignores everything else.
    public init(parsing text: some StringProtocol) {
        self.init()
        for line in text.split(separator: "\n") {
            if line.hasPrefix("-N ") {
                chains.insert(String(line.dropFirst(3)).trimmingBlanks)
            } else if line.hasPrefix(":"), let name = line.dropFirst().split(separator: " ").first {
                chains.insert(String(name))
            } else if let rule = IPTablesRule(line: line) {
                rules.append(rule)
            }
        }
    }

    /// POSTROUTING rules that jump to `chain`.
    public func jumps(to chain: String) -> [IPTablesRule] {
        rules.filter { $0.chain == "POSTROUTING" && $0.target == chain }
    }
}

/// The iptables rules of one attachment in one family, and the restore scripts that install,
/// remove and garbage-collect them.
public struct IPTablesMasquerade: Hashable, Sendable {
    public var family: IPFamily
    public var chain: String
    public var comment: String

    public init(family: IPFamily, network: String, containerID: String) {
        self.family = family
        self.chain = MasqueradeNames.iptablesChain(network: network, containerID: containerID)
        self.comment = MasqueradeNames.iptablesComment(network: network, containerID: containerID)
    }

    public var multicast: String { family == .v4 ? "224.0.0.0/4" : "ff00::/8" }

    /// The rules in `chain` for these addresses of this family: an ACCEPT per subnet, then one
    /// MASQUERADE. (The reference appends ACCEPT, MASQUERADE, ACCEPT for a second subnet, which
    /// makes the second ACCEPT dead; all ACCEPTs come first here.)
    public func chainRules(_ addresses: [IPNetwork]) -> [IPTablesRule] {
        var subnets: [IPNetwork] = []
        for a in addresses where a.family == family && !subnets.contains(a.network) { subnets.append(a.network) }
        let tail = ["-m", "comment", "--comment", comment]
        return subnets.map { IPTablesRule(chain: chain, arguments: ["-d", $0.description] + tail + ["-j", "ACCEPT"]) }
            + [IPTablesRule(chain: chain, arguments: ["!", "-d", multicast] + tail + ["-j", "MASQUERADE"])]
    }

    /// The POSTROUTING rule sending traffic from `address` to `chain`.
    public func jumpRule(_ address: IPAddress) -> IPTablesRule {
        IPTablesRule(
            chain: "POSTROUTING",
            arguments: [
                "-s", "\(address)/\(family.bitWidth)", "-m", "comment",
                "--comment", comment, "-j", chain,
            ])
    }

    /// Installs the chain for `addresses` given the current POSTROUTING rules: the chain is
    /// rewritten, missing jumps are added, and jumps to the chain from other sources (an earlier
    /// address, duplicates piled up by concurrent AppendUnique calls) are deleted.
    public func setupScript(addresses: [IPNetwork], postrouting: IPTablesListing) -> String {
        let own = addresses.filter { $0.family == family }
        var wanted: [IPAddress] = []
        for a in own where !wanted.contains(a.address) { wanted.append(a.address) }
        var present: Set<IPAddress> = []
        var lines = ["*nat", ":\(chain) - [0:0]"] + chainRules(own).map { $0.line() }
        for rule in postrouting.jumps(to: chain) {
            if let s = rule.source, s.prefixLength == family.bitWidth, wanted.contains(s.address),
                !present.contains(s.address)
            {
                present.insert(s.address)
            } else {
                lines.append(rule.line("-D"))
            }
        }
        lines += wanted.filter { !present.contains($0) }.map { jumpRule($0).line() }
        return (lines + ["COMMIT", ""]).joined(separator: "\n")
    }

    /// Removes every POSTROUTING jump to the chain, then the chain (created first if absent, so
    /// the script never fails on "No chain/target/match by that name").
    public func teardownScript(postrouting: IPTablesListing) -> String {
        Self.deleteScript(chains: [chain], postrouting: postrouting)
    }

    /// Whether `table` (the whole nat table) holds anything of this attachment: its chain or a
    /// jump to it. When not, teardown has nothing to send (and an iptables-restore transaction
    /// that declares and deletes a chain costs the kernel an RCU wait for nothing).
    public func isPresent(in table: IPTablesListing) -> Bool {
        table.chains.contains(chain) || !table.jumps(to: chain).isEmpty
    }

    /// Whether `listing` (the whole nat table) has this attachment's chain, its rules and a jump
    /// for every address of this family.
    public func isInstalled(addresses: [IPNetwork], in listing: IPTablesListing) -> Bool {
        let own = addresses.filter { $0.family == family }
        guard listing.chains.contains(chain) else { return false }
        let have = Set(listing.rules.filter { $0.chain == chain })
        guard chainRules(own).allSatisfy(have.contains) else { return false }
        let sources = listing.jumps(to: chain).compactMap(\.source)
        return own.allSatisfy { a in sources.contains { $0.address == a.address && $0.prefixLength == family.bitWidth }
        }
    }

    /// A restore script deleting the POSTROUTING jumps to `chains` and the chains themselves.
    static func deleteScript(chains: [String], postrouting: IPTablesListing) -> String {
        var lines = ["*nat"] + chains.map { ":\($0) - [0:0]" }
        for chain in chains { lines += postrouting.jumps(to: chain).map { $0.line("-D") } }
        lines += chains.map { "-X \($0)" }
        return (lines + ["COMMIT", ""]).joined(separator: "\n")
    }

    /// The GC script for `network` given the whole nat table: chains (and their POSTROUTING jumps)
    /// whose rules carry the comment `name: "<network>" id: "<cid>"` with a container ID not in
    /// `validContainerIDs`, and whose name is the hash of exactly that pair; nil when none.
    /// The iptables layout has no interface name, so validity is by container ID.
    public static func gcScript(
        network: String, validContainerIDs: Set<String>,
        table: IPTablesListing
    ) -> String? {
        let prefix = "name: " + MasqueradeNames.goQuoted(network) + " id: "
        var stale: [String] = []
        for rule in table.rules {
            guard let comment = rule.comment, comment.hasPrefix(prefix),
                let id = goUnquoted(comment.dropFirst(prefix.count)), !validContainerIDs.contains(id)
            else { continue }
            let chain = MasqueradeNames.iptablesChain(network: network, containerID: id)
            guard rule.chain == chain || rule.target == chain, !stale.contains(chain) else { continue }
            stale.append(chain)
        }
        return stale.isEmpty ? nil : deleteScript(chains: stale, postrouting: table)
    }

    /// Undoes `MasqueradeNames.goQuoted` for `"..."` with `\"` and `\\`; nil for anything else.
    static func goUnquoted(_ s: Substring) -> String? {
        guard s.count >= 2, s.first == "\"", s.last == "\"" else { return nil }
        var out = "", escaped = false
        for c in s.dropFirst().dropLast() {
            if escaped {
                guard c == "\"" || c == "\\" else { return nil }
                out.append(c); escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "\"" {
                return nil
            } else {
                out.append(c)
            }
        }
        return escaped ? nil : out
    }
}

extension StringProtocol {
    var trimmingBlanks: String { trimmed(String(self)) }
}
