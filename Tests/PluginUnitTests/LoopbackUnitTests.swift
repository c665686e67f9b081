// The loopback plugin in-process, against the in-memory kernel.

import CNI
import Loopback
import TestSupport
import Testing

@Suite struct LoopbackUnitTests {
    let kernel = InMemoryKernel()
    var loopback: Loopback { Loopback(kernel: kernel) }

    func conf(_ version: String) -> String { #"{"cniVersion":"\#(version)","name":"lo","type":"loopback"}"# }

    init() { kernel.addNamespace(podPath) }

    /// ADD brings lo up and reports it as the reference does: an all-zero MAC and the loopback
    /// addresses, in each version's layout.
    @Test(arguments: allVersions)
    func addBringsLoUp(version: String) throws {
        let add = dispatch(loopback, cniEnv("ADD", ifname: "lo"), conf(version))
        #expect(add.exitCode == 0, "\(add.text)")
        #expect(kernel.namespace(at: podPath)?.link(named: "lo")?.isUp == true)
        let expected =
            switch version {
            case "0.1.0", "0.2.0":
                #"{"cniVersion":"\#(version)","ip4":{"ip":"127.0.0.1/8"},"ip6":{"ip":"::1/128"}}"#
            case "0.3.0", "0.3.1", "0.4.0":
                #"""
                {"cniVersion":"\#(version)","interfaces":[{"name":"lo","mac":"00:00:00:00:00:00","sandbox":"\#(podPath)"}],
                 "ips":[{"version":"4","interface":0,"address":"127.0.0.1/8"},{"version":"6","interface":0,"address":"::1/128"}]}
                """#
            default:
                #"""
                {"cniVersion":"\#(version)","interfaces":[{"name":"lo","mac":"00:00:00:00:00:00","sandbox":"\#(podPath)"}],
                 "ips":[{"interface":0,"address":"127.0.0.1/8"},{"interface":0,"address":"::1/128"}]}
                """#
            }
        #expect(sameJSON(add.text, expected, ignoringEmptyDNS: true), "\(add.text)")
    }

    /// CHECK passes while lo is up and fails once it is down.
    @Test func checkFollowsTheLinkState() throws {
        #expect(dispatch(loopback, cniEnv("ADD", ifname: "lo"), conf("1.0.0")).exitCode == 0)
        #expect(dispatch(loopback, cniEnv("CHECK", ifname: "lo"), conf("1.0.0")).exitCode == 0)
        kernel.modify(podPath) { ns in ns.links[0].flags &= ~0x1 }
        let down = dispatch(loopback, cniEnv("CHECK", ifname: "lo"), conf("1.0.0"))
        #expect(down.message == "lo is down in \(podPath)", "\(down.text)")
    }

    /// A namespace that does not exist is code 4 for ADD; DEL has nothing to do and succeeds.
    @Test func missingNamespace() throws {
        let add = dispatch(loopback, cniEnv("ADD", netns: "/run/netns/gone", ifname: "lo"), conf("1.0.0"))
        #expect(add.code == 4, "\(add.text)")
        #expect(dispatch(loopback, cniEnv("DEL", netns: "/run/netns/gone", ifname: "lo"), conf("1.0.0")).exitCode == 0)
    }
}
