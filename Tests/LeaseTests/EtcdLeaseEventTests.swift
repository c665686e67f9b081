// The etcd registry's watch, flattened into lease events: what each etcd event becomes. No etcd
// runs here: the client is made and shut down without a request.

import Addressing
import Etcd
import FoundationEssentials
import Logging
import Overlay
import Testing

@testable import EtcdLeases

@Suite struct EtcdLeaseEventTests {
    @Test func etcdEventsBecomeLeaseEvents() async throws {
        let client = try EtcdClient(configuration: .init(endpoints: ["http://127.0.0.1:1"]), logger: logger)
        let registry = EtcdLeaseRegistry(client: client, prefix: "/coreos.com/network/", logger: logger)
        #expect(registry.configKey == "/coreos.com/network/config")
        func kv(_ name: String, _ value: String = "", lease: Int64? = nil) -> KeyValue {
            KeyValue(
                key: Array("/coreos.com/network/subnets/\(name)".utf8), value: Array(value.utf8), modRevision: 42,
                lease: lease.map { LeaseID($0) })
        }
        let value =
            #"{"PublicIP":"192.168.64.3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        let subnet = IPNetwork("10.5.34.0/24")!
        #expect(
            registry.event(WatchEvent(kind: .put, kv: kv("10.5.34.0-24", value, lease: 5)))
                == .put(
                    Lease(subnet: subnet, attributes: LeaseAttributes(json: Data(value.utf8))!, etcdLease: 5),
                    revision: 42))
        #expect(registry.event(WatchEvent(kind: .delete, kv: kv("10.5.34.0-24"))) == .delete(subnet, revision: 42))
        #expect(
            registry.event(WatchEvent(kind: .put, kv: kv("10.5.34.0-24", "garbage")))
                == .notALease(key: "/coreos.com/network/subnets/10.5.34.0-24", subnet: subnet, revision: 42))
        #expect(
            registry.event(WatchEvent(kind: .delete, kv: kv("not-a-subnet")))
                == .notALease(key: "/coreos.com/network/subnets/not-a-subnet", subnet: nil, revision: 42))
        await client.shutdown()
    }
}
