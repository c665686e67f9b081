// A BGP speaker: a listener on the BGP port and one `BGPPeer` per configured neighbour, all on
// one event loop. Connections from an address that is not a configured neighbour are closed; a
// neighbour's connection is handed to its peer. What the sessions report arrives on `events`.

import BGP
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

public final class BGPSpeaker: Sendable {
    public let eventLoop: any EventLoop
    let logger: Logger
    private let peers = NIOLockedValueBox<[String: BGPPeer]>([:])
    private let listener = NIOLockedValueBox<(any Channel)?>(nil)
    /// Every session event, with the peer it came from, in order per peer.
    public let events: AsyncStream<(peer: BGPPeer, event: BGPPeerEvent)>
    private let continuation: AsyncStream<(peer: BGPPeer, event: BGPPeerEvent)>.Continuation

    public init(eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(), logger: Logger) {
        self.eventLoop = eventLoop
        self.logger = logger
        (events, continuation) = AsyncStream.makeStream()
    }

    /// Listens on `host:port` (179 in production; 0 picks a free port) and returns the port.
    public func listen(host: String, port: Int) async throws -> Int {
        let speaker = self
        let channel = try await ServerBootstrap(group: eventLoop, childGroup: eventLoop)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let ip = channel.remoteAddress?.ipAddress, let peer = speaker.peer(ip) else {
                        throw UnknownPeer()
                    }
                    try BGPPeer.addHandlers(to: channel, peer: peer, accepted: true)
                }
            }
            .bind(host: host, port: port).get()
        listener.withLockedValue { $0 = channel }
        logger.info("BGP listening", metadata: ["bgp.address": "\(host):\(channel.localAddress?.port ?? port)"])
        return channel.localAddress?.port ?? port
    }

    struct UnknownPeer: Error {}

    func peer(_ ip: String) -> BGPPeer? { peers.withLockedValue { $0[ip] } }

    /// Adds a neighbour at `address` (its port is the one to connect to) and starts its session.
    @discardableResult
    public func addPeer(_ configuration: BGPSessionConfiguration, address: SocketAddress) -> BGPPeer {
        let continuation = self.continuation
        let peer = BGPPeer(
            configuration: configuration, address: address, eventLoop: eventLoop, logger: logger,
            onEvent: { peer, event in continuation.yield((peer, event)) })
        let old = peers.withLockedValue { peers in
            defer { peers[address.ipAddress ?? "\(address)"] = peer }
            return peers[address.ipAddress ?? "\(address)"]
        }
        _ = old?.stop()
        peer.start()
        return peer
    }

    /// Hands an already connected TCP socket to the neighbour at `peerIP`, as a connection the
    /// neighbour opened: for sockets made elsewhere (in another network namespace, or with socket
    /// options NIO does not set). The socket is the speaker's from here on.
    public func adopt(connectedSocket fd: NIOBSDSocket.Handle, peerIP: String) async throws {
        guard let peer = peer(peerIP) else { throw UnknownPeer() }
        _ = try await ClientBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try BGPPeer.addHandlers(to: channel, peer: peer, accepted: true)
                }
            }
            .withConnectedSocket(fd).get()
    }

    /// Stops the session with the neighbour at `ip` (Cease/Administrative Shutdown) and forgets it.
    public func removePeer(_ ip: String) async throws {
        guard let peer = peers.withLockedValue({ $0.removeValue(forKey: ip) }) else { return }
        try await peer.stop().get()
    }

    /// Sends `update` to the neighbour at `ip` if its session is established; false otherwise.
    public func send(_ update: BGPUpdate, to ip: String) async throws -> Bool {
        guard let peer = peer(ip) else { return false }
        return try await peer.send(update).get()
    }

    /// Sends `update` to every established session; returns how many got it.
    public func announce(_ update: BGPUpdate) async throws -> Int {
        var sent = 0
        for peer in peers.withLockedValue({ Array($0.values) }) where try await peer.send(update).get() {
            sent += 1
        }
        return sent
    }

    /// Stops every session and the listener; `events` ends. `notify`: with a NOTIFICATION
    /// (Cease/Administrative Shutdown); without, the connections are only closed, which
    /// graceful-restart helpers take for a restart and keep our routes.
    public func shutdown(notify: Bool = true) async throws {
        for peer in peers.withLockedValue({ p in
            defer { p = [:] }; return Array(p.values)
        }) {
            try await (notify ? peer.stop() : peer.abandon()).get()
        }
        if let channel = listener.withLockedValue({ $0 }) { try await channel.close().get() }
        continuation.finish()
    }
}
