// The bgp backend's service: the BGP speaker (SwiftNIO sessions) and `BGPRouter`'s decisions,
// carried out. One loop takes every input in order (session events, the network's changes of the
// node's subnet and of the nodes, timers), asks the router, and performs its effects: sessions
// through the speaker, routes through the network on the kernel thread.
//
// On graceful shutdown with graceful restart on, the sessions are closed without a NOTIFICATION:
// the routers keep this node's routes for the restart time while podnetd restarts (the kernel
// routes stay too, as for every backend). With graceful restart off, or when the node has lost its
// lease (`--exit-on-lease-loss`), each session ends with Cease/Administrative Shutdown and the
// routers withdraw the node's subnet at once.
//
// Metrics, per neighbour (label `peer`): podnet_bgp_session_established (1 or 0),
// podnet_bgp_session_uptime_seconds, podnet_bgp_prefixes_received (announcements so far, refused
// ones included), podnet_bgp_prefixes_accepted (in its Adj-RIB-In now), podnet_bgp_prefixes_announced,
// and the counter podnet_bgp_session_down_total.

import Addressing
import BGP
import BGPSpeaker
import Logging
import Metrics
import NIOCore
import Overlay
import ServiceLifecycle

public struct BGPRouting: Service {
    let network: BGPNetwork
    let subnetLength: Int
    /// This node's addresses: a learned next hop among them is refused.
    let nodeAddresses: [IPAddress]
    let threads: BlockingThreads
    let clock: any Clock<Duration>
    let logger: Logger
    /// The address the speaker listens on.
    let listenHost: String

    public init(
        network: BGPNetwork, subnetLength: Int, nodeAddresses: [IPAddress], threads: BlockingThreads,
        clock: any Clock<Duration>, logger: Logger, listenHost: String = "0.0.0.0"
    ) {
        self.network = network; self.subnetLength = subnetLength; self.nodeAddresses = nodeAddresses
        self.threads = threads; self.clock = clock; self.logger = logger; self.listenHost = listenHost
    }

    public func run() async throws {
        let network = self.network, clock = self.clock
        var router = BGPRouter(
            config: network.config, publicIP: network.interface.publicIP, network: network.backend.network,
            subnetLength: subnetLength, restarted: network.restarted, localAddresses: Set(nodeAddresses),
            usable: { network.reachesDirectly($0) })
        let speaker = BGPSpeaker(logger: logger)
        let port: Int
        do {
            port = try await speaker.listen(host: listenHost, port: Int(network.config.listenPort))
        } catch {
            throw BGPListenError(
                description:
                    "bgp: cannot listen on \(listenHost):\(network.config.listenPort): \(error) (does another BGP "
                    + "daemon run on this node? Backend.ListenPort picks another port)")
        }
        logger.info(
            "bgp: speaker started",
            metadata: [
                "bgp.as": "\(network.config.asNumber)", "bgp.port": "\(port)",
                "bgp.mesh": "\(network.config.nodeToNodeMesh)", "bgp.restarted": "\(network.restarted)",
            ])
        let (inputs, feed) = AsyncStream<BGPInput>.makeStream()
        let (timerRequests, requestTimer) = AsyncStream<(Duration, BGPInputKey)>.makeStream()
        var metrics = BGPMetrics()
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                for await (peer, event) in speaker.events {
                    let value: BGPPeerEventValue
                    switch event {
                    case .established(let n): value = .established(n)
                    case .update(let u): value = .update(u)
                    case .refresh: value = .refresh
                    case .down(let reason, let keep): value = .down(reason: reason, keepRoutes: keep)
                    }
                    feed.yield(.session(neighbour: peer.address.ipAddress ?? "\(peer.address)", value))
                }
            }
            group.addTask { for await event in network.events { feed.yield(.network(event)) } }
            group.addTask {
                await withDiscardingTaskGroup { timers in
                    for await (after, key) in timerRequests {
                        timers.addTask {
                            guard (try? await clock.sleep(for: after)) != nil else { return }
                            feed.yield(key.input)
                        }
                    }
                }
            }
            group.addTask {
                while (try? await clock.sleep(for: .seconds(5))) != nil { feed.yield(.tick) }
            }
            for effect in router.start() { await perform(effect, speaker: speaker, timers: requestTimer) }
            for await input in inputs.cancelOnGracefulShutdown() {
                for effect in router.handle(input) { await perform(effect, speaker: speaker, timers: requestTimer) }
                metrics.update(router)
            }
            // A node without its lease leaves for good: a NOTIFICATION ends graceful restart.
            let notify = network.config.gracefulRestartTime == 0 || network.isWithdrawn
            try await speaker.shutdown(notify: notify)
            logger.info(
                notify
                    ? "bgp: sessions closed (Cease); the neighbours withdraw this node's routes"
                    : "bgp: sessions closed for a restart; graceful-restart neighbours keep this node's routes")
            group.cancelAll()
        }
    }

    private func perform(
        _ effect: BGPEffect, speaker: BGPSpeaker, timers: AsyncStream<(Duration, BGPInputKey)>.Continuation
    ) async {
        let network = self.network
        switch effect {
        case .addNeighbour(let configuration, let address, let port):
            do {
                speaker.addPeer(configuration, address: try SocketAddress(ipAddress: "\(address)", port: Int(port)))
                logger.info(
                    "bgp: neighbour added",
                    metadata: [
                        "bgp.peer": "\(address)", "bgp.peer_as": "\(configuration.peerAS)",
                        "bgp.passive": "\(configuration.passive)",
                    ])
            } catch {
                logger.error("bgp: neighbour \(address) cannot be added: \(error)")
            }
        case .removeNeighbour(let address):
            do { try await speaker.removePeer(address) } catch {
                logger.warning("bgp: stopping the session with \(address) failed: \(error)")
            }
            logger.info("bgp: neighbour removed", metadata: ["bgp.peer": "\(address)"])
        case .send(let updates, let address):
            for update in updates {
                guard (try? await speaker.send(update, to: address)) == true else { break }
            }
        case .routes(let routes):
            do {
                let report = try await threads.kernel {
                    var report = ReconcileReport()
                    for (prefix, nextHop) in routes.sorted(by: { $0.key.address < $1.key.address }) {
                        report.merge(try network.setRoute(prefix, nextHop: nextHop))
                    }
                    return report
                }
                logger.debug(
                    "bgp: routes changed",
                    metadata: [
                        "bgp.prefixes": "\(routes.count)", "overlay.programmed": "\(report.programmed.routes)",
                        "overlay.removed": "\(report.removed.routes)", "overlay.failures": "\(report.failures.count)",
                    ])
            } catch {
                logger.error("bgp: setting routes failed (the next repair retries): \(error)")
            }
        case .endDeferral:
            do {
                let report = try await threads.kernel { try network.endDeferral() }
                logger.info(
                    "bgp: graceful restart complete", metadata: ["overlay.removed": "\(report.removed.routes)"])
            } catch {
                logger.error("bgp: ending the restart deferral failed: \(error)")
            }
        case .timer(let after, let key):
            timers.yield((after, key))
        }
    }
}

struct BGPListenError: Error, CustomStringConvertible {
    var description: String
}

/// The per-neighbour gauges, set from the router's state after each input.
struct BGPMetrics {
    private var established: [String: ContinuousClock.Instant] = [:]
    private var known: Set<String> = []

    mutating func update(_ router: BGPRouter) {
        let wall = ContinuousClock.now
        for (address, n) in router.neighbours {
            let peer = [("peer", address)]
            let up = n.negotiated != nil
            if up && established[address] == nil { established[address] = wall }
            if !up, established.removeValue(forKey: address) != nil {
                Counter(label: "podnet_bgp_session_down_total", dimensions: peer).increment()
            }
            Gauge(label: "podnet_bgp_session_established", dimensions: peer).record(up ? 1 : 0)
            let uptime = established[address].map { ($0.duration(to: wall)).components.seconds } ?? 0
            Gauge(label: "podnet_bgp_session_uptime_seconds", dimensions: peer).record(uptime)
            Gauge(label: "podnet_bgp_prefixes_received", dimensions: peer).record(n.received)
            Gauge(label: "podnet_bgp_prefixes_accepted", dimensions: peer).record(router.rib.count(from: address))
            Gauge(label: "podnet_bgp_prefixes_announced", dimensions: peer)
                .record(up && router.ownSubnet != nil ? 1 : 0)
        }
        for gone in known.subtracting(router.neighbours.keys) {
            Gauge(label: "podnet_bgp_session_established", dimensions: [("peer", gone)]).record(0)
            established[gone] = nil
        }
        known = Set(router.neighbours.keys)
    }
}
