// One BGP peer over SwiftNIO: the thin network part around `BGPSession`. It frames the TCP
// stream into messages, feeds the state machine its events (connected, a message, a decoding
// failure, a timer, the connection lost) and carries out what it answers (connect, send, close,
// timers). Everything of a peer runs on one event loop, so its state needs no lock.
//
// Connections: the peer connects out unless its configuration is passive, and the speaker hands
// it connections the remote side opened (`adopt`). A second connection while one is already past
// Connect is refused with Cease/Connection Collision Resolution: the one in progress wins, which
// RFC 4271 §6.8 allows when the other side's identifier is not yet known, and which an
// established session always does.

import BGP
import Logging
import NIOCore
import NIOPosix

/// What a peer reports to its speaker.
public enum BGPPeerEvent: Sendable, Equatable {
    case established(BGPNegotiated)
    case update(BGPUpdate)
    case refresh(BGPFamily)
    case down(reason: String, keepRoutes: Bool)
}

public final class BGPPeer: @unchecked Sendable {
    public let address: SocketAddress
    public let eventLoop: any EventLoop
    let logger: Logger
    private let onEvent: @Sendable (BGPPeer, BGPPeerEvent) -> Void
    // Confined to `eventLoop`.
    private var session: BGPSession
    private var channel: (any Channel)?
    private var timers: [BGPTimer: Scheduled<Void>] = [:]
    private var stopped = false

    init(
        configuration: BGPSessionConfiguration, address: SocketAddress, eventLoop: any EventLoop, logger: Logger,
        onEvent: @escaping @Sendable (BGPPeer, BGPPeerEvent) -> Void
    ) {
        self.session = BGPSession(configuration: configuration)
        self.address = address
        self.eventLoop = eventLoop
        self.logger = logger
        self.onEvent = onEvent
    }

    public var configuration: BGPSessionConfiguration { session.configuration }

    /// The session's state, read on the peer's event loop.
    public func state() -> EventLoopFuture<BGPSessionState> { eventLoop.submit { self.session.state } }

    func start() { eventLoop.execute { self.handle(.start) } }

    /// Stops the session (Cease/Administrative Shutdown when connected) for good.
    func stop() -> EventLoopFuture<Void> {
        eventLoop.submit {
            self.handle(.stop)
            self.stopped = true
            for (_, t) in self.timers { t.cancel() }
            self.timers = [:]
        }
    }

    /// Closes the connection without a NOTIFICATION and stops for good: to the neighbour, an
    /// unexpected loss, after which a graceful-restart helper keeps this speaker's routes.
    func abandon() -> EventLoopFuture<Void> {
        eventLoop.submit {
            self.stopped = true
            for (_, t) in self.timers { t.cancel() }
            self.timers = [:]
            let c = self.channel
            self.channel = nil
            c?.close(promise: nil)
        }
    }

    /// Sends `update` if the session is established; false otherwise.
    public func send(_ update: BGPUpdate) -> EventLoopFuture<Bool> {
        eventLoop.submit {
            guard self.session.state == .established else { return false }
            self.write(.update(update))
            return true
        }
    }

    /// A connection the peer opened to us.
    func adopt(_ incoming: any Channel) {
        eventLoop.preconditionInEventLoop()
        switch session.state {
        case .connect, .active:
            channel?.close(promise: nil)
            channel = incoming
            handle(.connected)
        default:
            let cease = BGPMessage.notification(BGPNotification(.cease, 7)).encoded()
            incoming.writeAndFlush(ByteBuffer(bytes: cease)).whenComplete { _ in incoming.close(promise: nil) }
        }
    }

    // MARK: The state machine's events and actions

    func handle(_ event: BGPSessionEvent) {
        eventLoop.preconditionInEventLoop()
        guard !stopped else { return }
        for action in session.handle(event) { perform(action) }
    }

    private func perform(_ action: BGPSessionAction) {
        switch action {
        case .connect:
            connect()
        case .send(let message):
            write(message)
        case .close:
            let c = channel
            channel = nil
            c?.close(promise: nil)
        case .startTimer(let timer, let after):
            timers[timer]?.cancel()
            timers[timer] = eventLoop.scheduleTask(in: TimeAmount(after)) { self.handle(.timerExpired(timer)) }
        case .stopTimer(let timer):
            timers.removeValue(forKey: timer)?.cancel()
        case .established(let n):
            logger.info(
                "BGP session established", metadata: ["bgp.peer": "\(address)", "bgp.hold_time": "\(n.holdTime)"])
            onEvent(self, .established(n))
        case .update(let u):
            onEvent(self, .update(u))
        case .refresh(let f):
            onEvent(self, .refresh(f))
        case .down(let reason, let keep):
            logger.notice("BGP session down", metadata: ["bgp.peer": "\(address)", "bgp.reason": "\(reason)"])
            onEvent(self, .down(reason: reason, keepRoutes: keep))
        }
    }

    private func write(_ message: BGPMessage) {
        guard let channel else { return }
        let fourOctet = session.negotiated?.fourOctetAS ?? true
        channel.writeAndFlush(ByteBuffer(bytes: message.encoded(fourOctetAS: fourOctet)), promise: nil)
    }

    private func connect() {
        let peer = self
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try BGPPeer.addHandlers(to: channel, peer: peer, accepted: false)
                }
            }
            .connect(to: address)
            .whenComplete { result in
                switch result {
                case .success(let c):
                    // A connection the peer opened may have been adopted meanwhile.
                    guard self.session.state == .connect, self.channel == nil else {
                        c.close(promise: nil)
                        return
                    }
                    self.channel = c
                    self.handle(.connected)
                case .failure(let error):
                    self.logger.debug(
                        "BGP connect failed", metadata: ["bgp.peer": "\(self.address)", "error": "\(error)"])
                    if self.session.state == .connect && self.channel == nil { self.handle(.connectionClosed) }
                }
            }
    }

    static func addHandlers(to channel: any Channel, peer: BGPPeer, accepted: Bool) throws {
        try channel.pipeline.syncOperations.addHandlers([
            ByteToMessageHandler(BGPFrameDecoder()), BGPConnectionHandler(peer: peer, accepted: accepted),
        ])
    }

    // MARK: From the connection

    fileprivate func received(_ frame: [UInt8], on c: any Channel) {
        guard c === channel else { return }
        do {
            let message = try BGPMessage.decode(frame, fourOctetAS: session.negotiated?.fourOctetAS ?? true)
            handle(.received(message))
        } catch {
            handle(.malformed(error))
        }
    }

    fileprivate func failed(_ notification: BGPNotification, on c: any Channel) {
        guard c === channel else { return }
        handle(.malformed(notification))
    }

    fileprivate func closed(_ c: any Channel) {
        guard c === channel else { return }
        channel = nil
        handle(.connectionClosed)
    }
}

/// Whole messages out of the byte stream: the header's length says where each ends; a header
/// that is not BGP's is an error carrying the NOTIFICATION to send.
struct BGPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = [UInt8]

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let header = buffer.readableBytesView.prefix(BGPMessage.headerLength)
        guard let length = try BGPMessage.frameLength(header), buffer.readableBytes >= length,
            let frame = buffer.readBytes(length: length)
        else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        try decode(context: context, buffer: &buffer)
    }
}

/// Hands frames, framing errors and the end of the connection to the peer.
final class BGPConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = [UInt8]
    let peer: BGPPeer?
    /// Whether the connection was accepted (the peer opened it): handed to the peer once active.
    let accepted: Bool

    init(peer: BGPPeer?, accepted: Bool) {
        self.peer = peer
        self.accepted = accepted
    }

    func channelActive(context: ChannelHandlerContext) {
        if accepted { peer?.adopt(context.channel) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        peer?.received(unwrapInboundIn(data), on: context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let n = error as? BGPNotification {
            peer?.failed(n, on: context.channel)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer?.closed(context.channel)
        context.fireChannelInactive()
    }
}
