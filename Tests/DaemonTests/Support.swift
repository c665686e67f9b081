// Helpers shared by the daemon's end-to-end tests: waiting for a node's kernel to match etcd,
// timing what the tests promise ("within 2 s"), and the fake peers some tests put into etcd.

import Addressing
import Foundation
import TestSupport
import Testing

/// Every end-to-end suite nests in this one, so that they run one after the other: each builds a
/// cluster of several daemons and an etcd, and the timing promises ("within 2 s") should not
/// depend on how many other clusters share the two CPUs.
@Suite(.serialized, .enabled(if: isRoot, "needs root to create network namespaces"))
enum DaemonEndToEnd {}

/// Polls `condition` every 20 ms for at most `seconds`; returns the seconds it took to hold, or
/// nil when it never did. Timed on the monotonic clock: a step of the wall clock (time sync on a
/// CI machine) must not cut the wait short.
func secondsUntil(within seconds: Double, _ condition: () throws -> Bool) rethrows -> Double? {
    let clock = ContinuousClock()
    let start = clock.now
    func elapsed() -> Double {
        let d = start.duration(to: clock.now).components
        return Double(d.seconds) + Double(d.attoseconds) / 1e18
    }
    repeat {
        if try condition() { return elapsed() }
        usleep(20_000)
    } while elapsed() < seconds
    return try condition() ? elapsed() : nil
}

/// Prints a measured figure next to the test's output.
func report(_ what: String, _ seconds: Double?) {
    print("[daemon-e2e] \(what): \(seconds.map { String(format: "%.3f s", $0) } ?? "not reached")")
}

/// Waits until each of `nodes` holds exactly the peer entries `leases` (default: etcd's, read once)
/// call for, and records an issue naming the differences and the daemon's log otherwise. Returns
/// the seconds it took the slowest node.
@discardableResult
func expectConverged(
    _ cluster: Cluster, _ nodes: [ClusterNode]? = nil, leases: [ClusterLease]? = nil,
    within seconds: Double, _ what: String, family: IPFamily? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> Double? {
    let leases = try leases ?? cluster.leases()
    let start = Date()
    var slowest: Double? = 0
    for node in nodes ?? cluster.nodes {
        let expected = try cluster.expectedEntries(on: node, leases: leases, family: family)
        let remaining = max(0.1, seconds - Date().timeIntervalSince(start))
        let took = try secondsUntil(within: remaining) { try node.kernelEntries(family: family) == expected }
        if took == nil {
            let actual = try node.kernelEntries(family: family)
            Issue.record(
                """
                \(what): \(node.name) (\(try node.subnet())) does not hold exactly etcd's state after \(seconds) s
                expected:
                \(expected)
                actual:
                \(actual)
                leases: \(leases)
                its log ends:
                \(node.logTail())
                """, sourceLocation: sourceLocation)
            slowest = nil
        } else if slowest != nil {
            slowest = Date().timeIntervalSince(start)
        }
    }
    report(what, slowest)
    return slowest
}

/// Expects each monitored node to have made its last change mentioning `subnet` (its route, and
/// for vxlan its neighbour, whose gateway is the subnet's first address) within `limit` seconds
/// of `start`, counting only changes up to `end`. The changes' times are the kernel's
/// notifications (`KernelMonitor`), so how long polling for the final state took does not count.
@discardableResult
func expectKernelChanged(
    _ monitors: [(node: ClusterNode, monitor: KernelMonitor)], subnet: String, from start: Date,
    to end: Date = Date(), within limit: Double, _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) -> Double? {
    let texts = [subnet + " ", " " + gateway(of: subnet) + " "]
    var slowest: Double? = 0
    for (node, monitor) in monitors {
        guard let last = monitor.lastEvent(containing: texts, from: start, to: end) else {
            Issue.record(
                "\(what): \(node.name) made no change for \(subnet); its events:\n\(monitor.events().map(\.line))",
                sourceLocation: sourceLocation)
            slowest = nil
            continue
        }
        let took = last.timeIntervalSince(start)
        #expect(took <= limit, "\(what): \(node.name) took \(took) s", sourceLocation: sourceLocation)
        slowest = slowest.map { max($0, took) }
    }
    report(what + " (kernel notifications)", slowest)
    return slowest
}

/// Deletes `peer`'s lease while it is frozen (so it cannot take the lease back at once): the other
/// nodes drop what they had for it within `limit` seconds (the kernel's notifications), and once it
/// runs again it re-acquires the lease, every node converges and the pods talk.
func expectFrozenPeersLeaseDeletedAndBack(
    _ c: Cluster, peer: ClusterNode, within limit: Double, _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let others = c.nodes.filter { $0.name != peer.name }
    let subnet = try peer.subnet()
    let monitors = try others.map { ($0, try $0.monitor()) }
    let key = try #require(try c.leases().first { $0.subnet == subnet }?.key, sourceLocation: sourceLocation)
    try peer.freeze()
    let deleted = Date()
    try c.etcd.delete(key)
    try expectConverged(c, others, within: 10, "\(what): peer removed", sourceLocation: sourceLocation)
    expectKernelChanged(
        monitors, subnet: subnet, from: deleted, within: limit, "\(what): peer removed", sourceLocation: sourceLocation)
    try peer.thaw()
    let back = try secondsUntil(within: 15) { try c.leases().contains { $0.subnet == subnet } }
    #expect(back != nil, "\(peer.logTail())", sourceLocation: sourceLocation)
    try expectConverged(c, within: 15, "\(what): peer back", sourceLocation: sourceLocation)
    try expectPingMatrixGreen(c, "\(what) after the peer came back", sourceLocation: sourceLocation)
}

/// "10.244.3.0/24" -> "10.244.3.0".
func gateway(of subnet: String) -> String { String(subnet.split(separator: "/")[0]) }

/// Expects a green ping matrix between all pods of the cluster.
func expectPingMatrixGreen(_ cluster: Cluster, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws
{
    let start = Date()
    let failures = try cluster.pingMatrixFailures()
    let pods = cluster.nodes.flatMap(\.pods).count
    #expect(
        failures.isEmpty,
        "\(what): pings failed: \(failures)\n\(cluster.nodes.map { "\($0.name): \($0.logTail(8))" }.joined(separator: "\n"))",
        sourceLocation: sourceLocation)
    print(
        "[daemon-e2e] \(what): ping matrix \(pods)x\(pods - 1) \(failures.isEmpty ? "green" : "FAILED") in \(String(format: "%.2f", Date().timeIntervalSince(start))) s"
    )
}

/// The lease of `node` in `leases`.
func lease(of node: ClusterNode, in leases: [ClusterLease]) -> ClusterLease? {
    leases.first { $0.publicIP == node.address || ($0.publicIPv6 != nil && $0.publicIPv6 == node.ipv6Address) }
}

/// A peer that exists only as a lease in etcd (a reservation): 10.244.<n>.0/24 at 192.168.50.<n>,
/// VtepMAC 02:00:00:00:00:<n>. Its entries are programmed like any other peer's; nothing answers.
struct FakePeer {
    let n: Int
    var subnet: String { "10.244.\(n).0/24" }
    var publicIP: String { "\(Cluster.underlayPrefix).\(n)" }
    var mac: String { String(format: "02:00:00:00:00:%02x", n) }

    func put(_ cluster: Cluster, mac: String? = nil) throws {
        try cluster.etcd.putLease(subnet: subnet, publicIP: publicIP, vtepMAC: mac ?? self.mac)
    }

    func delete(_ cluster: Cluster) throws { try cluster.etcd.delete(cluster.etcd.leaseKey(subnet)) }
}

/// Whether this kernel can create ipip devices (tried in a throw-away namespace).
let kernelHasIPIP: Bool = {
    guard isRoot else { return false }
    let ns = "podnet-t-ipip-probe-\(getpid())"
    defer { _ = try? run(["/usr/sbin/ip", "netns", "delete", ns]) }
    guard (try? run(["/usr/sbin/ip", "netns", "add", ns]))?.status == 0 else { return false }
    return (try? run(["/usr/sbin/ip", "-n", ns, "link", "add", "probe0", "type", "ipip", "local", "192.0.2.1"]))?.status
        == 0
}()
