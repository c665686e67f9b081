// The delegate config, built from the flannel config and subnet.env as flannel-io/cni-plugin
// builds it (reference §5.3), byte for byte where the reference's output is known.

import Addressing
import CNI
import Flannel
import Foundation
import Testing

private func delegate(_ config: String, subnetEnv: String = exampleSubnetEnv) throws -> String {
    let conf = try FlannelConfig(try request(config))
    let env = try SubnetEnv.parse(Array(subnetEnv.utf8), path: "subnet.env")
    return JSON.object(try conf.delegateConfig(env)).text
}

private func delegateError(_ config: String) throws -> CNIError? {
    let conf = try FlannelConfig(try request(config))
    let env = try SubnetEnv.parse(Array(exampleSubnetEnv.utf8), path: "subnet.env")
    do { _ = try conf.delegateConfig(env); return nil } catch { return error }
}

@Suite struct DelegateConfigTests {
    /// The reference's output for the stock kube-flannel.yml conf (§5.3), compared as bytes: Go's
    /// sorted, compact map encoding.
    @Test func matchesTheReferenceForTheStockConfig() throws {
        let stock =
            #"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#
        #expect(
            try delegate(stock)
                == #"{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}"#
        )
    }

    /// netconf/40-flannel.conflist is the stock conf at 1.0.0.
    @Test func theShippedConflistBuildsTheStockDelegate() throws {
        #expect(
            try delegate(try conflistFlannelConfig())
                == #"{"cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}"#
        )
        let list = jsonObject(try netconfFile("40-flannel.conflist"))
        let portmap = (list["plugins"] as? [[String: Any]])?.last
        #expect(portmap?["type"] as? String == "portmap")
        #expect((portmap?["capabilities"] as? [String: Any])?["portMappings"] as? Bool == true)
    }

    @Test func dualStackGetsOneRangeSetAndRoutesPerFamily() throws {
        let env = """
            FLANNEL_NETWORK=10.244.0.0/16,10.250.0.0/16
            FLANNEL_SUBNET=10.244.1.1/24
            FLANNEL_IPV6_NETWORK=2001:cafe:42::/56
            FLANNEL_IPV6_SUBNET=2001:cafe:42:1::1/64
            FLANNEL_MTU=1450
            FLANNEL_IPMASQ=false
            """
        let d = jsonObject(
            try delegate(
                #"{"cniVersion":"1.0.0","name":"n","type":"flannel","ipam":{"routes":[{"dst":"192.168.0.0/16","gw":"10.244.1.254"}]}}"#,
                subnetEnv: env))
        #expect(d["ipMasq"] as? Bool == true)
        let ipam = try #require(d["ipam"] as? [String: Any])
        let ranges = try #require(ipam["ranges"] as? [[[String: String]]])
        #expect(ranges == [[["subnet": "10.244.1.0/24"]], [["subnet": "2001:cafe:42:1::/64"]]])
        let routes = try #require(ipam["routes"] as? [[String: String]])
        #expect(
            routes == [
                ["dst": "192.168.0.0/16", "gw": "10.244.1.254"], ["dst": "10.244.0.0/16"],
                ["dst": "10.250.0.0/16"], ["dst": "2001:cafe:42::/56"],
            ])
    }

    /// The shipped conflist with flanneld's dual-stack subnet.env (netconf/subnet-dualstack.env):
    /// one range set per family, IPv4 first, and a route to each family's network.
    @Test func shippedConflistWithADualStackSubnetEnv() throws {
        #expect(
            try delegate(try conflistFlannelConfig(), subnetEnv: try netconfFile("subnet-dualstack.env"))
                == #"{"cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.7.0/24"}],[{"subnet":"fd00:10:244:7::/64"}]],"routes":[{"dst":"10.244.0.0/16"},{"dst":"fd00:10:244::/56"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1410,"name":"cbr0","type":"bridge"}"#
        )
    }

    /// IPv6-only (no IPv4 keys, netconf/subnet-ipv6only.env): one IPv6 range set, the IPv6
    /// network's route only, and ipMasq from FLANNEL_IPMASQ=false.
    @Test func shippedConflistWithAnIPv6OnlySubnetEnv() throws {
        #expect(
            try delegate(try conflistFlannelConfig(), subnetEnv: try netconfFile("subnet-ipv6only.env"))
                == #"{"cniVersion":"1.0.0","hairpinMode":true,"ipMasq":true,"ipam":{"ranges":[[{"subnet":"fd00:10:244:7::/64"}]],"routes":[{"dst":"fd00:10:244::/56"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1410,"name":"cbr0","type":"bridge"}"#
        )
    }

    @Test func delegateKeysOverrideAndPassThrough() throws {
        let d = jsonObject(
            try delegate(
                #"{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":{"bridge":"kbr0","ipMasq":true,"mtu":1300,"isGateway":false,"forceAddress":true}}"#
            ))
        #expect(d["bridge"] as? String == "kbr0")
        #expect(d["ipMasq"] as? Bool == true)
        #expect(d["mtu"] as? Int == 1300)
        #expect(d["isGateway"] as? Bool == false)
        #expect(d["forceAddress"] as? Bool == true)
    }

    @Test func isGatewayOnlyForABridge() throws {
        let d = jsonObject(
            try delegate(
                #"{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":{"type":"ipvlan","master":"eth0"}}"#))
        #expect(d["type"] as? String == "ipvlan")
        #expect(d["isGateway"] == nil)
        #expect(d["mtu"] as? Int == 1450)
    }

    @Test func ipamKeysPassThroughAndRangesAreReplaced() throws {
        let d = jsonObject(
            try delegate(
                #"{"cniVersion":"1.0.0","name":"n","type":"flannel","ipam":{"type":"my-ipam","dataDir":"/tmp/x","ranges":[[{"subnet":"192.0.2.0/24"}]]}}"#
            ))
        let ipam = try #require(d["ipam"] as? [String: Any])
        #expect(ipam["type"] as? String == "my-ipam")
        #expect(ipam["dataDir"] as? String == "/tmp/x")
        #expect(ipam["ranges"] as? [[[String: String]]] == [[["subnet": "10.244.1.0/24"]]])
    }

    @Test func runtimeConfigIsCopiedAndCniVersionFollowsTheConfig() throws {
        let d = jsonObject(
            try delegate(
                #"{"cniVersion":"0.4.0","name":"n","type":"flannel","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},"delegate":{"cniVersion":"9.9.9"}}"#
            ))
        #expect(d["cniVersion"] as? String == "0.4.0")
        let pm = (d["runtimeConfig"] as? [String: Any])?["portMappings"] as? [[String: Any]]
        #expect(pm?.first?["hostPort"] as? Int == 8080)
        // A config without cniVersion gives the delegate none either.
        let bare = jsonObject(try delegate(#"{"name":"n","type":"flannel"}"#))
        #expect(bare["cniVersion"] == nil)
    }

    @Test func forbiddenDelegateKeysAreRefused() throws {
        let name = try delegateError(#"{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":{"name":"x"}}"#)
        #expect(name?.msg == "'delegate' dictionary must not have 'name' field, it'll be set by flannel")
        #expect(name?.code == 7)
        let ipam = try delegateError(#"{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":{"ipam":{}}}"#)
        #expect(ipam?.msg == "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel")
        let type = try delegateError(#"{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":{"type":5}}"#)
        #expect(type?.msg == "'delegate' dictionary, if present, must have (string) 'type' field")
        let routes = try delegateError(
            #"{"cniVersion":"1.0.0","name":"n","type":"flannel","ipam":{"routes":[{"dst":"nope"}]}}"#)
        #expect(routes?.code == 7)
        #expect(throws: CNIError.self) {
            try FlannelConfig(try request(#"{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":[1]}"#))
        }
    }

    @Test func defaultsAndEmptyStrings() throws {
        let conf = try FlannelConfig(
            try request(#"{"cniVersion":"1.0.0","name":"n","type":"flannel","subnetFile":"","dataDir":""}"#))
        #expect(conf.subnetFile == "/run/flannel/subnet.env")
        #expect(conf.dataDir == "/var/lib/cni/flannel")
    }

    /// GC and DEL of a damaged save build the delegate without subnet.env: no subnet-derived keys.
    @Test func withoutSubnetEnvTheSubnetKeysAreLeftOut() throws {
        let conf = try FlannelConfig(
            try request(#"{"cniVersion":"1.1.0","name":"n","type":"flannel","ipam":{"dataDir":"/tmp/ipam"}}"#))
        #expect(
            JSON.object(try conf.delegateConfig(nil)).text
                == #"{"cniVersion":"1.1.0","ipam":{"dataDir":"/tmp/ipam","routes":[],"type":"host-local"},"isGateway":true,"name":"n","type":"bridge"}"#
        )
    }
}
