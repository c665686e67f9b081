import Testing

@testable import Addressing

@Suite struct AddressingTests {
    @Test func parsesAndPrintsLikeGo() throws {
        #expect(IPAddress("10.88.0.5")?.description == "10.88.0.5")
        #expect(IPAddress("2001:0db8:0:0::5")?.description == "2001:db8::5")
        #expect(IPAddress("::1.2.3.4")?.description == "::102:304")
        #expect(IPAddress("::")?.description == "::")
        #expect(IPAddress("1:0:0:1:0:0:0:1")?.description == "1:0:0:1::1")
        #expect(IPAddress("1:0:0:1:1:0:0:1")?.description == "1::1:1:0:0:1")
        #expect(IPAddress("1:2:3:4:5:6:0:8")?.description == "1:2:3:4:5:6:0:8")
        #expect(IPAddress("10.88.0") == nil)
        #expect(IPAddress("010.1.1.1") == nil)
        #expect(IPNetwork("10.88.0.5/16")?.network.description == "10.88.0.0/16")
        #expect(IPNetwork("10.88.0.0/33") == nil)
        #expect(IPNetwork("fd00::1/64")?.lastAddress.description == "fd00::ffff:ffff:ffff:ffff")
        #expect(MACAddress("0A:1b:2c:3d:4e:5f")?.description == "0a:1b:2c:3d:4e:5f")
        #expect(MACAddress("0a:1b:2c") == nil)
        #expect(MACAddress("0a-1b-2c-3d-4e-5f")?.description == "0a:1b:2c:3d:4e:5f")
        for bad in [
            "0a:1b:2c:3d:4e:5f:", "0a:1b:2c:3d:4e:5", "0a::1b:2c:3d:4e:5f", "+a:1b:2c:3d:4e:5f", "0a:1b:2c:3d:4e:5g",
            "",
        ] {
            #expect(MACAddress(bad) == nil, "\(bad)")
        }
    }

    @Test func arithmeticAndContainment() throws {
        let n = try #require(IPNetwork("192.168.1.0/24"))
        #expect(n.contains(IPAddress("192.168.1.255")!))
        #expect(!n.contains(IPAddress("192.168.2.0")!))
        #expect(!n.contains(IPAddress("::1")!))
        #expect(IPAddress("10.0.0.255")!.advanced(by: 1)?.description == "10.0.1.0")
        #expect(IPAddress("255.255.255.255")!.advanced(by: 1) == nil)
        #expect(IPAddress("0.0.0.0")!.advanced(by: -1) == nil)
        #expect(n.overlaps(IPNetwork("192.168.0.0/16")!))
        #expect(!n.overlaps(IPNetwork("192.168.2.0/24")!))
        #expect(IPNetwork("10.0.0.1/24")!.hasHostBits)
    }
}
