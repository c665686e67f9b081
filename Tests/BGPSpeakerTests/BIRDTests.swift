// The speaker against BIRD 2 (Debian's bird2), the routers' implementation the bgp backend will
// meet most: BIRD in one namespace as a passive iBGP route reflector (the reference's recipe, §5.2),
// the speaker's connection made from another namespace and handed to it. The session comes up,
// BIRD's own route arrives decoded, the route the speaker announces lands in BIRD's kernel table,
// and its withdrawal removes it. Needs root and BIRD; skipped visibly without them.

import Addressing
import BGP
import Foundation
import Logging
import NIOCore
import NetNS
import TestSupport
import Testing

@testable import BGPSpeaker

let birdAvailable = FileManager.default.isExecutableFile(atPath: "/usr/sbin/bird")

@Suite(.enabled(if: isRoot && birdAvailable, "needs root and BIRD 2 (scripts/deps.sh installs bird2)"))
struct BIRDInteropTests {
    static let birdConfig = """
        router id 10.0.0.2;
        protocol device { scan time 10; }
        protocol direct { ipv4; interface "v1"; }
        protocol kernel kernel4 { ipv4 { import none; export where source = RTS_BGP; }; }
        protocol static static4 { ipv4; route 10.99.0.0/24 blackhole; }
        protocol bgp nodes {
          local as 64512;
          neighbor range 10.0.0.0/8 as 64512;
          rr client;
          hold time 9;
          ipv4 { import all; export where source ~ [RTS_STATIC, RTS_BGP]; };
        }
        """

    @Test func aSessionWithBIRDExchangesRoutesBothWays() async throws {
        let node = TestNamespace(name: "podnet-t-bgp\(UInt32.random(in: 0...UInt32.max))")
        let router = TestNamespace(name: node.name + "r")
        let dir = NSTemporaryDirectory() + node.name
        var bird: Process?
        defer {
            // SIGKILL, not waited for here (Process's wait hangs an async test): the namespaces go.
            if let bird { kill(bird.processIdentifier, SIGKILL) }
            for ns in [node, router] { _ = try? sh("ip netns delete \(ns.name)") }
            try? FileManager.default.removeItem(atPath: dir)
        }
        for ns in [node, router] {
            try sh("ip netns add \(ns.name)")
            try ns.sh("ip link set lo up")
        }
        try node.sh("ip link add v0 type veth peer name v1 netns \(router.name)")
        try node.sh("ip addr add 10.0.0.1/24 dev v0 && ip link set v0 up")
        try router.sh("ip addr add 10.0.0.2/24 dev v1 && ip link set v1 up")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.birdConfig.write(toFile: dir + "/bird.conf", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", router.name, "bird", "-f", "-c", dir + "/bird.conf", "-s", dir + "/bird.ctl"]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        bird = p
        try await until("BIRD listens on 179") { (try? router.sh("ss -ltnH 'sport = :179'"))?.isEmpty == false }

        let speaker = BGPSpeaker(logger: Logger(label: "bgp-bird"))
        var c = BGPSessionConfiguration(localAS: 64512, peerAS: 64512, routerID: 0x0a00_0001)
        c.passive = true
        c.holdTime = 9
        speaker.addPeer(c, address: try SocketAddress(ipAddress: "10.0.0.2", port: 179))
        let fd = try NetworkNamespace(path: node.path).run { try connectTCP("10.0.0.2", 179) }
        try await speaker.adopt(connectedSocket: fd, peerIP: "10.0.0.2")
        let negotiated = try await next(speaker) { if case .established(let n) = $0 { n } else { nil } }
        #expect(negotiated.peerRouterID == 0x0a00_0002 && negotiated.holdTime == 9 && negotiated.fourOctetAS)

        // BIRD's static route, with BIRD itself as the next hop and LOCAL_PREF 100 (iBGP).
        let fromBIRD = try await next(speaker) { event -> BGPUpdate? in
            if case .update(let u) = event, u.announced.contains(IPNetwork("10.99.0.0/24")!) { u } else { nil }
        }
        #expect(fromBIRD.attributes.nextHop == IPAddress("10.0.0.2") && fromBIRD.attributes.localPref == 100)
        #expect(fromBIRD.attributes.asPath == [] && fromBIRD.attributes.origin == 0)

        // Our pod subnet, as podnetd will announce it: BIRD installs it in its kernel table.
        var a = BGPPathAttributes()
        a.origin = 0
        a.asPath = []
        a.nextHop = IPAddress("10.0.0.1")
        a.localPref = 100
        #expect(try await speaker.announce(BGPUpdate(attributes: a, nlri: [IPNetwork("10.244.1.0/24")!])) == 1)
        try await until("BIRD's kernel route to 10.244.1.0/24") {
            (try? router.sh("ip route show 10.244.1.0/24"))?.contains("via 10.0.0.1 dev v1 proto bird") == true
        }
        _ = try await speaker.announce(BGPUpdate(withdrawn: [IPNetwork("10.244.1.0/24")!]))
        try await until("the withdrawn route gone from BIRD's kernel table") {
            (try? router.sh("ip route show 10.244.1.0/24"))?.isEmpty == true
        }
        try await speaker.shutdown()
    }
}

/// Polls `condition` every 50 ms for up to `seconds`: the state is BIRD's, in another process.
func until(_ what: String, within seconds: Double = 20, _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting for \(what)")
            throw TimedOut()
        }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// A TCP connection to `ip:port` made in the calling thread's network namespace.
func connectTCP(_ ip: String, _ port: UInt16) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    inet_pton(AF_INET, ip, &addr.sin_addr)
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard rc == 0 else {
        close(fd)
        throw POSIXError(.init(rawValue: errno) ?? .EIO)
    }
    return fd
}
