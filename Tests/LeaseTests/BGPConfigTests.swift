// The bgp backend's options in the network config: defaults, peers limited to a rack by
// NodePrefix, and every bad value a config error naming its key.

import Addressing
import Foundation
import Overlay
import Testing

@Suite struct BGPConfigTests {
    @Test func defaultsAreCalicosAS64512WithTheMeshOnAndGracefulRestart() throws {
        let c = try config(#"{"Network":"10.244.0.0/16","Backend":{"Type":"BGP"}}"#)
        #expect(c.backendType == "bgp")
        #expect(c.bgp == BGPConfig())
        #expect(c.bgp.asNumber == 64512 && c.bgp.nodeToNodeMesh && c.bgp.neighbours.isEmpty)
        #expect(c.bgp.listenPort == 179 && c.bgp.holdTime == 90 && c.bgp.gracefulRestartTime == 120)
    }

    @Test func peersWithANodePrefixAreTheNeighboursOfThatRacksNodesOnly() throws {
        let c = try config(
            #"""
            {"Network":"10.244.0.0/16","Backend":{"Type":"bgp","asnumber":4200000001,"NodeToNodeMesh":false,
             "HoldTime":9,"GracefulRestartTime":0,"ListenPort":1179,"Peers":[
              {"PeerIP":"192.168.50.1","ASNumber":65001,"NodePrefix":"192.168.50.0/24"},
              {"peerip":"192.168.60.1","ASNumber":65002,"NodePrefix":"192.168.60.0/24","Port":1790},
              {"PeerIP":"192.168.70.1","ASNumber":64512}]}}
            """#)
        let b = c.bgp
        #expect(b.asNumber == 4_200_000_001 && !b.nodeToNodeMesh && b.holdTime == 9 && b.gracefulRestartTime == 0)
        #expect(b.listenPort == 1179)
        let rack1 = b.neighbours(ofNode: IPAddress("192.168.50.11")!).map { "\($0.address):\($0.port)" }
        let rack2 = b.neighbours(ofNode: IPAddress("192.168.60.12")!).map { "\($0.address):\($0.port)" }
        #expect(rack1 == ["192.168.50.1:179", "192.168.70.1:179"])
        #expect(rack2 == ["192.168.60.1:1790", "192.168.70.1:179"])
    }

    /// The README's example, netconf/net-conf-bgp.json: two racks, each rack's nodes with their router.
    @Test func theExampleConfigReads() throws {
        let path = #filePath.split(separator: "/").dropLast(3).joined(separator: "/") + "/netconf/net-conf-bgp.json"
        let c = try NetworkConfig(json: Data(contentsOf: URL(fileURLWithPath: "/" + path)))
        #expect(c.backendType == "bgp" && c.bgp.nodeToNodeMesh && c.bgp.asNumber == 64512)
        #expect(c.bgp.neighbours(ofNode: IPAddress("192.168.60.14")!).map(\.address) == [IPAddress("192.168.60.1")!])
    }

    @Test func badValuesAreConfigErrorsNamingTheKey() {
        let cases: [(String, [String])] = [
            (#","ASNumber":0"#, ["Backend.ASNumber", "1...4294967295"]),
            (#","ASNumber":4294967296"#, ["Backend.ASNumber"]),
            (#","ASNumber":23456"#, ["Backend.ASNumber", "AS_TRANS"]),
            (#","ASNumber":"64512""#, ["Backend.ASNumber", "whole number"]),
            (#","NodeToNodeMesh":"yes""#, ["Backend.NodeToNodeMesh", "true or false"]),
            (#","HoldTime":2"#, ["Backend.HoldTime", "at least 3"]),
            (#","HoldTime":65536"#, ["Backend.HoldTime"]),
            (#","GracefulRestartTime":4096"#, ["Backend.GracefulRestartTime", "0...4095"]),
            (#","ListenPort":0"#, ["Backend.ListenPort"]),
            (#","Peers":{}"#, ["Backend.Peers must be an array"]),
            (#","Peers":[5]"#, ["Backend.Peers[0] must be an object"]),
            (#","Peers":[{"ASNumber":65001}]"#, ["Backend.Peers[0].PeerIP is missing"]),
            (#","Peers":[{"PeerIP":"router","ASNumber":65001}]"#, ["Backend.Peers[0].PeerIP", "IPv4"]),
            (#","Peers":[{"PeerIP":"fd00::1","ASNumber":65001}]"#, ["Backend.Peers[0].PeerIP", "IPv4"]),
            (
                #","Peers":[{"PeerIP":"10.244.0.1","ASNumber":65001}]"#,
                ["Backend.Peers[0].PeerIP", "inside the Network"]
            ),
            (#","Peers":[{"PeerIP":"127.0.0.1","ASNumber":65001}]"#, ["Backend.Peers[0].PeerIP"]),
            (#","Peers":[{"PeerIP":"192.168.50.1"}]"#, ["Backend.Peers[0].ASNumber is missing"]),
            (
                #","Peers":[{"PeerIP":"192.168.50.1","ASNumber":1},{"PeerIP":"192.168.50.1","ASNumber":2}]"#,
                ["Backend.Peers[1].PeerIP", "twice"]
            ),
            (
                #","Peers":[{"PeerIP":"192.168.50.1","ASNumber":1,"NodePrefix":"192.168.50.1/24"}]"#,
                ["Backend.Peers[0].NodePrefix"]
            ),
            (#","Peers":[{"PeerIP":"192.168.50.1","ASNumber":1,"Port":0}]"#, ["Backend.Peers[0].Port"]),
        ]
        for (options, fragments) in cases {
            do {
                _ = try config(#"{"Network":"10.244.0.0/16","Backend":{"Type":"bgp"\#(options)}}"#)
                Issue.record("\(options) was accepted")
            } catch {
                for f in fragments { #expect("\(error)".contains(f), "\(options): \(error)") }
            }
        }
    }
}
