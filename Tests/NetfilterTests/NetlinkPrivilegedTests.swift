// nftables over netlink against `nft -f`: the same steps in two namespaces, one through each
// path, must leave `nft list ruleset` printing exactly the same text, and the netlink path must
// spawn no `nft` on ADD or DEL.

import Addressing
import NetNS
import Netlink
import Synchronization
import Testing

@testable import Netfilter

/// Records the programs a runner was asked to run, then runs them in the namespace.
final class LoggingRunner: CommandRunner {
    let base: NamespacedRunner
    let log = Mutex<[String]>([])

    init(_ base: NamespacedRunner) { self.base = base }

    var programs: [String] { log.withLock { $0 } }
    func clear() { log.withLock { $0.removeAll() } }

    func run(_ command: Command) throws(NetfilterError) -> CommandOutput {
        log.withLock { $0.append(command.executable) }
        return try base.run(command)
    }
}

/// Netlink nftables inside the namespace at `path`: each call opens its socket there.
struct NamespacedNFTables: NFTablesKernel {
    let path: String

    func inside<T>(_ body: () throws(NetfilterError) -> T) throws(NetfilterError) -> T {
        let result: Result<T, NetfilterError>
        do {
            result = try NetworkNamespace(path: path).run {
                do throws(NetfilterError) { return .success(try body()) } catch { return .failure(error) }
            }
        } catch {
            throw .netlink(.invalidArgument("entering \(path): \(error)"))
        }
        return try result.get()
    }

    func rules(_ family: NFTFamily, table: String, chain: String?) throws(NetfilterError) -> [NFTListedRule] {
        try inside { () throws(NetfilterError) in
            try NetlinkNFTables(detachedClose: false).rules(family, table: table, chain: chain)
        }
    }

    func apply(_ batch: NFTBatch) throws(NetfilterError) {
        try inside { () throws(NetfilterError) in try NetlinkNFTables(detachedClose: false).apply(batch) }
    }
}

extension TestNamespace {
    /// `nft list ruleset`. (Not with handles: netlink leaves a chain that is already right alone
    /// where the nft script flushes and re-adds it, so the handles of those rules differ.)
    func ruleset() throws -> String { try run("nft", "list", "ruleset") }
}

@Suite(.enabled(if: TestNamespace.available, "needs root and iproute2 to create network namespaces"))
struct NetlinkMasqueradeTests {
    let network = "podnet-test"

    typealias Step = (Masquerade) throws -> Void

    func add(_ cid: String, _ addresses: [String], network: String = "podnet-test") -> Step {
        {
            try $0.setup(
                backend: .nftables, network: network, containerID: cid, ifname: "eth0",
                addresses: addresses.map { IPNetwork($0)! })
        }
    }

    @Test func netlinkAddDelAndGCLeaveWhatNftLeaves() throws {
        try TestNamespace.with(2) { nss in
            let viaNft = Masquerade(runner: nss[0].runner)
            let runner = LoggingRunner(nss[1].runner)
            let viaNetlink = Masquerade(runner: runner, nftables: NamespacedNFTables(path: nss[1].path))
            func both(_ step: Step) throws {
                try step(viaNft)
                try step(viaNetlink)
                #expect(try nss[0].ruleset() == nss[1].ruleset())
            }
            try both(add("ctr-1", ["10.77.0.5/24", "fd77::5/64"]))
            try both(add("ctr-2", ["10.77.0.9/24"]))
            // Prefixes that are not whole bytes, and /32 and /128 subnets.
            try both(add("ctr-3", ["10.128.3.4/9", "fd77:1::7/60", "10.9.9.9/32", "fd77:2::1/128"], network: "other"))
            // A repeated ADD with a new address replaces the attachment's rules.
            try both(add("ctr-1", ["10.77.0.6/24"]))
            #expect(runner.programs.filter { $0 == "nft" } == [])

            try both { try $0.teardown(network: network, containerID: "ctr-1", ifname: "eth0") }
            try both { try $0.gc(network: "other", valid: []) }
            try both { try $0.teardown(network: network, containerID: "never", ifname: "eth0") }
            #expect(runner.programs.filter { $0 == "nft" } == [])
            #expect(try nss[1].ruleset().contains("id: ctr-2"))
            // CHECK still reads the listing: it sees what netlink added.
            #expect(
                try viaNetlink.check(
                    backend: .nftables, network: network, containerID: "ctr-2", ifname: "eth0",
                    addresses: [IPNetwork("10.77.0.9/24")!]))
        }
    }

    @Test func teardownSeesIPTablesRulesInNFTablesAndStartsNoIPTablesWithoutThem() throws {
        try TestNamespace.with { nss in
            let ns = nss[0]
            let runner = LoggingRunner(ns.runner)
            let m = Masquerade(runner: runner, nftables: NamespacedNFTables(path: ns.path))
            // iptables rules (iptables-nft keeps them in nf_tables): found, so removed.
            try m.setup(
                backend: .iptables, network: network, containerID: "ctr-1", ifname: "eth0",
                addresses: [IPNetwork("10.77.0.5/24")!, IPNetwork("fd77::5/64")!])
            runner.clear()
            try m.teardown(network: network, containerID: "ctr-1", ifname: "eth0")
            #expect(try ns.natRules() == [])
            #expect(runner.programs.contains("iptables") && runner.programs.contains("ip6tables"))
            // An nftables attachment: iptables holds nothing of it, and no iptables is started.
            try add("ctr-2", ["10.77.0.9/24", "fd77::9/64"])(m)
            #expect(try ns.ruleset().contains("ctr-2"))
            runner.clear()
            try m.teardown(network: network, containerID: "ctr-2", ifname: "eth0")
            #expect(runner.programs == [])
            #expect(try !ns.ruleset().contains("ctr-2"))
        }
    }

    @Test func netlinkDeletesWhatNftAddedAndTheOtherWayRound() throws {
        try TestNamespace.with(2) { nss in
            for (i, ns) in nss.enumerated() {
                let viaNft = Masquerade(runner: ns.runner)
                let viaNetlink = Masquerade(runner: ns.runner, nftables: NamespacedNFTables(path: ns.path))
                let (adder, deleter) = i == 0 ? (viaNft, viaNetlink) : (viaNetlink, viaNft)
                try add("ctr-1", ["10.77.0.5/24", "fd77::5/64"])(adder)
                try add("ctr-2", ["10.77.0.9/24"])(adder)
                try deleter.teardown(network: network, containerID: "ctr-1", ifname: "eth0")
                let left = try ns.run("nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks")
                #expect(!left.contains("id: ctr-1") && left.contains("id: ctr-2"))
            }
            #expect(try nss[0].ruleset() == nss[1].ruleset())
        }
    }
}

@Suite(.enabled(if: TestNamespace.available, "needs root and iproute2 to create network namespaces"))
struct NetlinkPortmapTests {
    let v4 = IPNetwork("10.88.0.5/16")!
    let v6 = IPNetwork("fd88::5/64")!

    func forwarding(_ cid: String, snat: Bool = true, masqAll: Bool = false) -> PortForwarding {
        var f = PortForwarding(
            network: "pmnet", containerID: cid,
            mappings: [
                PortMapping(hostPort: 8080, containerPort: 80, proto: "tcp"),
                PortMapping(hostPort: 5353, containerPort: 53, proto: "udp"),
                PortMapping(hostPort: 8443, containerPort: 443, proto: "tcp", hostIP: IPAddress("192.0.2.1")!),
                PortMapping(hostPort: 9443, containerPort: 443, proto: "sctp", hostIP: IPAddress("2001:db8::1")!),
                PortMapping(hostPort: 5354, containerPort: 53, proto: "udp", hostIP: IPAddress("0.0.0.0")!),
            ])
        f.snat = snat
        f.masqAll = masqAll
        return f
    }

    @Test func netlinkAddDelAndGCLeaveWhatNftLeaves() throws {
        try TestNamespace.with(2) { nss in
            let viaNft = HostPorts(runner: nss[0].runner)
            let runner = LoggingRunner(nss[1].runner)
            let viaNetlink = HostPorts(runner: runner, nftables: NamespacedNFTables(path: nss[1].path))
            func both(_ step: (HostPorts) throws -> Void) throws {
                try both { h -> Int in
                    try step(h)
                    return 0
                }
            }
            func both<T: Equatable>(_ step: (HostPorts) throws -> T) throws {
                let a = try step(viaNft), b = try step(viaNetlink)
                #expect(a == b)
                #expect(try nss[0].ruleset() == nss[1].ruleset())
            }
            try both { try $0.setup(backend: .nftables, forwarding("ctr-1"), addresses: [v4, v6]) }
            var conditioned = forwarding("ctr-2", masqAll: true)
            conditioned.conditionsV4 = ["ip", "saddr", "!=", "10.0.0.0/9", "ip", "daddr", "192.0.2.0/24"]
            conditioned.conditionsV6 = ["ip6", "daddr", "!=", "fd00::/60"]
            try both {
                try $0.setup(
                    backend: .nftables, conditioned, addresses: [IPNetwork("10.88.0.6/16")!, IPNetwork("fd88::6/64")!])
            }
            try both {
                try $0.setup(
                    backend: .nftables, forwarding("ctr-3", snat: false), addresses: [IPNetwork("10.88.0.7/16")!])
            }
            #expect(runner.programs.filter { $0 == "nft" } == [])

            try both { try $0.teardown(backend: .nftables, network: "pmnet", containerID: "ctr-1").sorted() }
            var removed: [UDPPort] = []
            try both { h in
                removed = try h.teardown(backend: .nftables, network: "pmnet", containerID: "ctr-2").sorted()
                return removed
            }
            #expect(
                removed == [
                    UDPPort(family: .v4, port: 5353), UDPPort(family: .v4, port: 5354),
                    UDPPort(family: .v6, port: 5353),
                ])
            try both { h in try h.gc(backend: .nftables, network: "pmnet", validContainerIDs: []) }
            try both { try $0.teardown(backend: .nftables, network: "pmnet", containerID: "never") }
            #expect(runner.programs.filter { $0 == "nft" } == [])
        }
    }

    @Test func conditionsNetlinkCannotEncodeGoThroughNft() throws {
        try TestNamespace.with(1) { nss in
            let runner = LoggingRunner(nss[0].runner)
            let viaNetlink = HostPorts(runner: runner, nftables: NamespacedNFTables(path: nss[0].path))
            var f = forwarding("ctr-1")
            f.conditionsV4 = ["iifname", "\"eth0\""]
            try viaNetlink.setup(backend: .nftables, f, addresses: [v4])
            #expect(runner.programs == ["nft"])
            #expect(try nss[0].ruleset().contains("iifname \"eth0\" fib daddr type local jump hostports_all"))
        }
    }
}
