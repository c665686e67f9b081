// The node agent in-process (issue 9, item 7): start-up, the lease keeper, the peer watcher, the
// repairer and graceful shutdown, against the in-memory registry and the fake kernel. Time moves
// only on the manual clock; every wait is for an event or a condition, never for wall-clock time.

import Addressing
import Foundation
import Netlink
import NodeAgent
import Overlay
import Prometheus
import ServiceLifecycle
import ServiceLifecycleTestKit
import TestSupport
import Testing

@Suite struct StartUpTests {
    @Test func programsThePeersWritesTheSubnetFileAndIsReady() async throws {
        let registry = InMemoryLeaseRegistry(config: vxlanConfig)
        registry.put(peerLease("10.5.2.0/24", "192.168.77.2"))
        registry.put(peerLease("10.5.3.0/24", "192.168.77.3", mac: "02:00:00:00:00:03"))
        let node = TestNode(registry: registry)
        #expect(!node.readiness.isReady)
        let services = try await node.agent.start()
        #expect(services.count == 4)
        #expect(node.readiness.isReady)
        let own = try #require(node.ownLease)
        #expect(!own.isReservation)
        #expect(node.routes("10.5.2.0/24") && node.routes("10.5.3.0/24"))
        #expect(node.dataPath.kernel.link(named: "flannel.1") != nil)
        let file = try String(contentsOfFile: node.options.subnetFile, encoding: .utf8)
        #expect(file.contains("FLANNEL_SUBNET=\(own.subnet.network.address.advanced(by: 1)!)/24\n"))
        #expect(file.contains("FLANNEL_MTU=1450\n") && file.contains("FLANNEL_IPMASQ=false\n"))
        // The forward rules are flanneld's default: the other backend's rules go first.
        #expect(node.rules.history == ["removeLeftovers", "ensure"])
    }

    @Test func waitsForAValidConfig() async throws {
        let registry = InMemoryLeaseRegistry(config: nil)
        let node = TestNode(registry: registry)
        let agent = node.agent
        let start = Task { try await agent.start() }
        await node.clock.waitForSleepers()
        // Invalid: waited out as well, nothing written.
        registry.setConfig(#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}"#)
        node.clock.advance(by: .seconds(1))
        await node.clock.waitForSleepers()
        #expect(registry.snapshot.operations.isEmpty)
        #expect(!node.readiness.isReady)
        registry.setConfig(vxlanConfig)
        node.clock.advance(by: .seconds(1))
        _ = try await start.value
        #expect(node.readiness.isReady)
        #expect(node.ownLease != nil)
    }

    @Test func installsTheRulesWithIPMasq() async throws {
        let node = TestNode { $0.ipMasq = true }
        _ = try await node.agent.start()
        #expect(node.rules.calls == 1)
        #expect(try String(contentsOfFile: node.options.subnetFile, encoding: .utf8).contains("FLANNEL_IPMASQ=true\n"))
    }

    @Test func anInterfaceThatDoesNotExistIsAnError() async throws {
        let node = TestNode { $0.interfaces = ["eth9"] }
        await #expect(throws: NoInterface.self) { try await node.agent.start() }
    }
}

@Suite struct LeaseKeeperTests {
    @Test func renewsBeforeTheLeaseExpires() async throws {
        let node = TestNode()
        let services = try await node.agent.start()
        let own = try #require(node.ownLease)
        try await withServices(services) {
            await node.clock.waitForSleepers(2)  // the renewal and the repair
            node.clock.advance(by: .seconds(24 * 3600))
            await node.registry.waitUntil { $0.operations.contains { $0.kind == .update && $0.subnet == own.subnet } }
        }
        let renewed = try #require(node.ownLease)
        #expect(renewed.subnet == own.subnet)
        #expect(renewed.etcdLease != own.etcdLease)
    }

    @Test func aFailedRenewalIsRetriedTenSecondsLater() async throws {
        let node = TestNode()
        let services = try await node.agent.start()
        let own = try #require(node.ownLease)
        node.registry.fail(.update)
        try await withServices(services) {
            await node.clock.waitForSleepers(2)
            node.clock.advance(by: .seconds(24 * 3600))
            // The failed renewal schedules a retry: the repair's sleep and the retry's.
            await node.clock.waitForSleepers(2)
            #expect(!node.registry.snapshot.operations.contains { $0.kind == .update })
            node.clock.advance(by: .seconds(10))
            await node.registry.waitUntil { $0.operations.contains { $0.kind == .update && $0.subnet == own.subnet } }
        }
    }

    @Test func acquiresTheLeaseAgainWhenItIsDeleted() async throws {
        let node = TestNode()
        let services = try await node.agent.start()
        let own = try #require(node.ownLease)
        try await withServices(services) {
            await node.registry.waitUntil { $0.watchers == 1 }
            node.registry.expire(own.subnet)
            await node.registry.waitUntil { $0.leases[own.subnet] != nil }
        }
        // The same subnet (the previous one is the hint): the pods keep their addresses.
        #expect(node.ownLease?.subnet == own.subnet)
        #expect(node.registry.snapshot.operations.filter { $0.kind == .create }.count == 2)
    }

    @Test func exitsWhenTheLeaseIsDeletedAndItWasToldTo() async throws {
        let node = TestNode { $0.exitOnLeaseLoss = true }
        let services = try await node.agent.start()
        let own = try #require(node.ownLease)
        let group = ServiceGroup(services: services, logger: quiet)
        let run = Task { try await group.run() }
        await node.registry.waitUntil { $0.watchers == 1 }
        node.registry.expire(own.subnet)
        await #expect(throws: LeaseLost.self) { try await run.value }
        #expect(node.ownLease == nil)
    }

    @Test func putsAnOverwrittenLeaseBack() async throws {
        let node = TestNode()
        let services = try await node.agent.start()
        let own = try #require(node.ownLease)
        try await withServices(services) {
            await node.registry.waitUntil { $0.watchers == 1 }
            node.registry.put(
                Lease(subnet: own.subnet, attributes: peerLease("10.5.9.0/24", "192.168.77.9").attributes, etcdLease: 9)
            )
            await node.registry.waitUntil { $0.leases[own.subnet]?.attributes == own.attributes }
        }
    }
}

@Suite struct PeerWatcherTests {
    @Test func programsAddedUpdatedAndRemovedPeers() async throws {
        let node = TestNode()
        let services = try await node.agent.start()
        let dp = node.dataPath
        try await withServices(services) {
            await node.registry.waitUntil { $0.watchers == 1 }
            node.registry.put(peerLease("10.5.7.0/24", "192.168.77.7", mac: "02:00:00:00:00:07"))
            await dp.waitUntil {
                TestNode.routes($0, "10.5.7.0/24") && $0.fdb.contains { $0.mac == MACAddress("02:00:00:00:00:07") }
            }
            // A new VtepMAC: the FDB entry follows it.
            node.registry.put(peerLease("10.5.7.0/24", "192.168.77.7", mac: "02:00:00:00:00:77"))
            await dp.waitUntil { k in
                k.fdb.contains { $0.mac == MACAddress("02:00:00:00:00:77") }
                    && !k.fdb.contains { $0.mac == MACAddress("02:00:00:00:00:07") }
            }
            node.registry.remove(IPNetwork("10.5.7.0/24")!)
            await dp.waitUntil { k in
                !TestNode.routes(k, "10.5.7.0/24") && !k.fdb.contains { $0.mac == MACAddress("02:00:00:00:00:77") }
            }
        }
    }

    @Test func aValueThatIsNoLeaseRemovesThePeer() async throws {
        let registry = InMemoryLeaseRegistry(config: vxlanConfig)
        registry.put(peerLease("10.5.2.0/24", "192.168.77.2"))
        let node = TestNode(registry: registry)
        let services = try await node.agent.start()
        #expect(node.routes("10.5.2.0/24"))
        try await withServices(services) {
            await registry.waitUntil { $0.watchers == 1 }
            registry.putRaw("not-a-subnet", value: "{}")
            registry.putRaw("10.5.2.0-24", value: "not json")
            await node.dataPath.waitUntil { !TestNode.routes($0, "10.5.2.0/24") }
        }
    }

    @Test func listsAgainAfterACompaction() async throws {
        let registry = InMemoryLeaseRegistry(config: vxlanConfig)
        registry.put(peerLease("10.5.2.0/24", "192.168.77.2"))
        let node = TestNode(registry: registry)
        let services = try await node.agent.start()
        try await withServices(services) {
            await registry.waitUntil { $0.watchers == 1 }
            // The watcher falls behind; the changes it missed are compacted away.
            registry.pauseWatches()
            registry.remove(IPNetwork("10.5.2.0/24")!)
            registry.put(peerLease("10.5.4.0/24", "192.168.77.4"))
            registry.compact()
            await node.dataPath.waitUntil { !TestNode.routes($0, "10.5.2.0/24") && TestNode.routes($0, "10.5.4.0/24") }
            // And it watches again, from after the listing.
            await registry.waitUntil { $0.watchers == 1 }
            registry.put(peerLease("10.5.5.0/24", "192.168.77.5"))
            await node.dataPath.waitUntil { TestNode.routes($0, "10.5.5.0/24") }
        }
    }

    @Test func anInterruptedWatchCarriesOn() async throws {
        let node = TestNode()
        let services = try await node.agent.start()
        try await withServices(services) {
            await node.registry.waitUntil { $0.watchers == 1 }
            node.registry.interruptWatches()
            node.registry.put(peerLease("10.5.6.0/24", "192.168.77.6"))
            await node.dataPath.waitUntil { TestNode.routes($0, "10.5.6.0/24") }
        }
    }
}

@Suite struct RepairerTests {
    @Test func putsBackWhatWasDeletedBehindItsBack() async throws {
        let registry = InMemoryLeaseRegistry(config: vxlanConfig)
        registry.put(peerLease("10.5.2.0/24", "192.168.77.2"))
        let node = TestNode(registry: registry)
        let services = try await node.agent.start()
        node.dataPath.modify { $0.routes.removeAll { $0.destination == IPNetwork("10.5.2.0/24")! } }
        #expect(!node.routes("10.5.2.0/24"))
        try await withServices(services) {
            await node.clock.waitForSleepers(3)
            node.clock.advance(by: .seconds(10))
            await node.dataPath.waitUntil { TestNode.routes($0, "10.5.2.0/24") }
        }
    }

    @Test func checksTheRulesEveryResyncPeriod() async throws {
        let node = TestNode { $0.resyncInterval = .seconds(3) }
        let services = try await node.agent.start()
        #expect(node.rules.calls == 1)
        try await withServices(services) {
            // The lease keeper, the repairer and the resync sleep.
            await node.clock.waitForSleepers(3)
            node.clock.advance(by: .seconds(3))
            // The next sleep follows the check.
            await node.clock.waitForSleepers(3)
            #expect(node.rules.calls == 2)
            node.clock.advance(by: .seconds(3))
            await node.clock.waitForSleepers(3)
            #expect(node.rules.calls == 3)
        }
        #expect(node.rules.history.filter { $0 == "removeLeftovers" }.count == 1)
    }

    @Test func keepsTheBlackholeRouteWithIPBlackholeRoute() async throws {
        let node = TestNode { $0.blackholeRoute = true }
        let services = try await node.agent.start()
        let subnet = try #require(node.ownLease).subnet
        func blackholed(_ k: FakeKernel) -> Bool {
            k.routes.contains { $0.type == .blackhole && $0.destination == subnet }
        }
        #expect(blackholed(node.dataPath.kernel))
        node.dataPath.modify { $0.routes.removeAll { $0.type == .blackhole } }
        try await withServices(services) {
            await node.clock.waitForSleepers(3)
            node.clock.advance(by: .seconds(5))
            await node.dataPath.waitUntil { k in
                k.routes.contains { $0.type == .blackhole && $0.destination == subnet }
            }
        }
        // Without the flag: none.
        let plain = TestNode()
        _ = try await plain.agent.start()
        #expect(!plain.dataPath.kernel.routes.contains { $0.type == .blackhole })
    }

    @Test func healthzAnswersAndPeersAreProgrammedWhileTheRulesAreBlocked() async throws {
        // The second ensure (the first resync's) blocks, as iptables-restore waiting for the lock.
        let rules = TestRules(blockAfter: 1)
        let node = TestNode(rules: rules) { $0.ipMasq = true }
        let health = try await HealthServer(
            host: "127.0.0.1", port: 0, readiness: node.readiness,
            registry: PrometheusCollectorRegistry(), logger: quiet
        ).start()
        let port = try #require(health.port)
        let services = try await node.agent.start()
        try await withServices(services + [health]) {
            await node.clock.waitForSleepers(2)
            node.clock.advance(by: .seconds(10))
            var entered = rules.entered.stream.makeAsyncIterator()
            let blocked = await entered.next()
            #expect(blocked == 2)
            // Blocked: /healthz and /readyz answer, and the watch programs a new peer.
            let healthz = try httpGet(port: port, "/healthz"), readyz = try httpGet(port: port, "/readyz")
            #expect(healthz.hasPrefix("HTTP/1.1 200 OK") && healthz.contains("podnetd is running"))
            #expect(readyz.contains("podnetd is ready"))
            node.registry.put(peerLease("10.5.8.0/24", "192.168.77.8"))
            await node.dataPath.waitUntil { TestNode.routes($0, "10.5.8.0/24") }
            rules.release()
            await node.clock.waitForSleepers(2)
        }
    }
}

@Suite struct ShutdownTests {
    @Test func gracefulShutdownLeavesTheLeaseAndTheDataPath() async throws {
        let registry = InMemoryLeaseRegistry(config: vxlanConfig)
        registry.put(peerLease("10.5.2.0/24", "192.168.77.2"))
        let node = TestNode(registry: registry)
        let services = try await node.agent.start()
        let own = try #require(node.ownLease)
        node.dataPath.clearCalls()
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for service in services { tasks.addTask { try await service.run() } }
                await registry.waitUntil { $0.watchers == 1 }
                await node.clock.waitForSleepers(2)
                trigger.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
        #expect(node.ownLease == own)
        #expect(!registry.snapshot.operations.contains { $0.kind == .delete })
        #expect(node.dataPath.changes.isEmpty)
        #expect(node.routes("10.5.2.0/24") && node.dataPath.kernel.link(named: "flannel.1") != nil)
    }
}
