// podnetd end to end in bgp mode on one L2 segment: the node-to-node mesh (iBGP between all
// nodes, discovered from the leases) gives every node every other node's subnet, with the node as
// next hop and podnet's route protocol; a deleted lease takes the route away, and a restarted
// node keeps its routes while its sessions come back.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct BGPMesh {
        @Test func theMeshGivesEveryNodeEveryOtherSubnetAndFollowsTheLeases() throws {
            var options = ClusterOptions(backend: "bgp", nodes: 3, podsPerNode: 1)
            options.reconcileInterval = 1
            options.daemonArguments = ["--healthz-ip", "127.0.0.1", "--healthz-port", "9102"]
            try Cluster.with(options) { c in
                let leases = try c.leases()
                #expect(leases.count == 3 && leases.allSatisfy { $0.backendType == "bgp" }, "\(leases)")
                try expectConverged(c, leases: leases, within: 15, "bgp mesh routes")
                for node in c.nodes {
                    #expect(try node.tunnelDevices().isEmpty)
                    #expect(try node.subnetEnv()["FLANNEL_MTU"] == "1500")
                    // Every learned route carries podnet's protocol.
                    let routes = try node.json("ip -j -4 route show proto 98")
                    #expect(routes.count == 2, "\(node.name): \(routes)")
                }
                try expectPingMatrixGreen(c, "bgp mesh, 3 nodes")
                // /metrics: each session established, one prefix received, accepted and announced.
                let n2Address = c.nodes[1].address
                let metrics = try c.nodes[0].namespace.sh("curl -s http://127.0.0.1:9102/metrics")
                for line in [
                    #"podnet_bgp_session_established{peer="\#(n2Address)"} 1"#,
                    #"podnet_bgp_prefixes_accepted{peer="\#(n2Address)"} 1"#,
                    #"podnet_bgp_prefixes_announced{peer="\#(n2Address)"} 1"#,
                ] {
                    #expect(metrics.contains(line), "\(line) not in:\n\(metrics)")
                }

                // A lease deleted: the others drop the route within 3 s, though the node's
                // session (frozen) still offers it.
                try expectFrozenPeersLeaseDeletedAndBack(c, peer: c.nodes[2], within: 3, "bgp mesh")
            }
        }

        @Test func aRestartedNodeKeepsItsRoutesAndItsPeersKeepTheirs() throws {
            try Cluster.with(ClusterOptions(backend: "bgp", nodes: 2, podsPerNode: 1)) { c in
                let (n1, n2) = (c.nodes[0], c.nodes[1])
                try expectConverged(c, within: 15, "bgp mesh routes")
                let ping = try n1.pods[0].startPing(n2.pods[0].address, interval: 0.05)
                try n1.restart()
                // The session comes back, node 2 sends its routes and End-of-RIB, and only then
                // does node 1 sweep what nobody offered again; node 2 kept node 1's route as
                // stale meanwhile. The pods' ping runs through all of it.
                let complete = secondsUntil(within: 20) {
                    n1.logTail(400).contains("bgp: graceful restart complete")
                }
                #expect(complete != nil, "\(n1.logTail(40))\n\(n2.logTail(20))")
                try expectConverged(c, within: 15, "bgp mesh after node 1 restarted")
                let stats = try ping.stop()
                #expect(stats.transmitted > 10, "\(stats)")
                #expect(stats.transmitted - stats.received <= 3, "lost \(stats) across the restart\n\(n1.logTail())")
                try expectPingMatrixGreen(c, "bgp mesh after the restart")
            }
        }
    }
}

/// A BGP neighbour that opens a session properly (AS 65099, IPv4 unicast, 4-octet AS), answers the
/// node's KEEPALIVE, then sends a message whose marker is not all ones; it writes what the node
/// sent back ("NOTIFICATION <code> <subcode>") to its log, and waits for the next connection.
private let garbagePeer = #"""
    import socket, struct, sys
    me = sys.argv[1]
    def msg(kind, body=b""):
        return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body
    caps = bytes([1, 4, 0, 1, 0, 1, 65, 4]) + struct.pack("!I", 65099)
    open_body = struct.pack("!BHH4sB", 4, 65099, 90, socket.inet_aton(me), len(caps) + 2) + bytes([2, len(caps)]) + caps
    def read(c, n):
        b = b""
        while len(b) < n:
            chunk = c.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((me, 179))
    s.listen(4)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(msg(1, open_body))
            while True:
                h = read(c, 19)
                length, kind = struct.unpack("!HB", h[16:19])
                body = read(c, length - 19)
                if kind == 4:
                    c.sendall(msg(4))
                    c.sendall(b"\x00" * 16 + struct.pack("!HB", 23, 2) + b"\x00\x00\x00\x00")
                elif kind == 3:
                    print(f"NOTIFICATION {body[0]} {body[1]}", flush=True)
        except (EOFError, OSError):
            pass
        c.close()
    """#

extension DaemonEndToEnd.BGPMesh {
    /// A neighbour that sends garbage once the session is up gets the NOTIFICATION RFC 4271 asks for
    /// (1/1, connection not synchronized), its session is reset, and podnetd and its other
    /// sessions go on: the mesh stays established and the pods keep talking.
    @Test func aNeighbourSendingGarbageIsResetAndNothingElseIsTouched() throws {
        var options = ClusterOptions(backend: "bgp", nodes: 2, podsPerNode: 1)
        options.daemonArguments = ["--healthz-ip", "127.0.0.1", "--healthz-port", "9102"]
        options.backendJSON =
            #"{"Type":"bgp","Peers":[{"PeerIP":"192.168.50.3","ASNumber":65099}]}"#
        try Cluster.with(options) { c in
            let host = c.etcd.members[0].namespace
            let script = c.directory + "/garbage-peer.py", log = c.directory + "/garbage-peer.log"
            try writeExecutable(script, garbagePeer)
            try host.sh("ip addr add 192.168.50.3/24 dev eth0")
            _ = try c.background(in: host, ["/usr/bin/python3", "-u", script, "192.168.50.3"], log: log)
            let (n1, n2) = (c.nodes[0], c.nodes[1])
            let reset = secondsUntil(within: 20) {
                ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("NOTIFICATION 1 1")
            }
            #expect(reset != nil, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")\n\(n1.logTail(30))")
            #expect(n1.logTail(200).contains("BGP session down"), "\(n1.logTail(30))")
            try expectConverged(c, within: 15, "bgp mesh beside a garbage-sending neighbour")
            try expectPingMatrixGreen(c, "bgp mesh beside a garbage-sending neighbour")
            let metrics = try n1.namespace.sh("curl -s http://127.0.0.1:9102/metrics")
            #expect(metrics.contains(#"podnet_bgp_session_established{peer="\#(n2.address)"} 1"#), "\(metrics)")
            #expect(n1.isRunning && n2.isRunning)
        }
    }
}
