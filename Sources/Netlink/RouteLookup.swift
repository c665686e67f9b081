// Route lookup (`ip route get`): an RTM_GETROUTE request without NLM_F_DUMP, for which the kernel
// runs its output route lookup for a packet to RTA_DST from this host, through every rule and
// table, and answers with one RTM_NEWROUTE describing the result: type, output device, gateway
// and the source address it would pick (RTA_PREFSRC). libnl's `rtnl_route_lookup` does the same
// but folds the kernel's errno into NLE_FAILURE, and "no route" (ENETUNREACH) versus "blackhole"
// (EINVAL) is exactly what a caller wants to tell apart; so the request is built here and the
// error message keeps the errno's text.
//
// The kernel answers a route it cannot use for output with an error, not a message: a blackhole
// with EINVAL, an unreachable route with EHOSTUNREACH, a prohibit route with EACCES, no route at
// all with ENETUNREACH.
//
// The request carries NLM_F_ACK (nl_send_auto adds it), so a successful answer is followed by an
// acknowledgement, which is read before returning: left in the socket, it would be taken for the
// answer to the session's next request.

import Addressing
import CLibNL

#if canImport(Glibc)
    import Glibc
#endif

/// Where the kernel would send a packet (`ip route get`).
public struct RouteLookup: Equatable, Sendable {
    /// `.unicast` for a route through a device, `.local` for an address of this host.
    public var type: RouteType
    /// RTA_OIF: the output device (the loopback device for a local address).
    public var interface: Int32?
    /// RTA_GATEWAY: the next hop, nil when the destination is on the link.
    public var gateway: IPAddress?
    /// RTA_PREFSRC: the source address the kernel would use.
    public var source: IPAddress?
    // No table: the kernel answers RT_TABLE_MAIN whatever table the route came from (unless
    // asked for RTM_F_LOOKUP_TABLE).

    public init(type: RouteType = .unicast, interface: Int32?, gateway: IPAddress? = nil, source: IPAddress? = nil) {
        self.type = type; self.interface = interface; self.gateway = gateway; self.source = source
    }
}

/// What the callbacks gather while libnl reads the answer.
private final class LookupContext {
    var answer: RouteLookup?
    var errno: Int32?
}

private let onAnswer: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { msg, arg in
    let context = Unmanaged<LookupContext>.fromOpaque(arg!).takeUnretainedValue()
    var o: OpaquePointer?
    guard rtnl_route_parse(nlmsg_hdr(msg), &o) >= 0, let o else { return Int32(NL_SKIP.rawValue) }
    defer { rtnl_route_put(o) }
    var answer = RouteLookup(
        type: RouteType(rawValue: rtnl_route_get_type(o)), interface: nil,
        source: IPAddress(nlAddr: rtnl_route_get_pref_src(o)))
    if rtnl_route_get_nnexthops(o) > 0, let nh = rtnl_route_nexthop_n(o, 0) {
        answer.gateway = IPAddress(nlAddr: rtnl_route_nh_get_gateway(nh))
        let i = rtnl_route_nh_get_ifindex(nh)
        answer.interface = i > 0 ? i : nil
    }
    context.answer = answer
    return Int32(NL_OK.rawValue)
}

private let onError:
    @convention(c) (
        UnsafeMutablePointer<sockaddr_nl>?, UnsafeMutablePointer<nlmsgerr>?, UnsafeMutableRawPointer?
    ) -> Int32 = { _, error, arg in
        let context = Unmanaged<LookupContext>.fromOpaque(arg!).takeUnretainedValue()
        context.errno = -(error?.pointee.error ?? 0)
        return Int32(NL_STOP.rawValue)
    }

extension NetlinkSession {
    /// The route the kernel would use to send a packet from this host to `destination`.
    /// Fails when the kernel would not send it: ENETUNREACH ("Network is unreachable") with no
    /// route, EINVAL for a blackhole, EHOSTUNREACH for an unreachable route, EACCES for a
    /// prohibit route; the error's message is the errno's text.
    // ip route get <destination>
    public func lookupRoute(to destination: IPAddress) throws(NetlinkError) -> RouteLookup {
        let operation = "RTM_GETROUTE \(destination)"
        let request = Request(
            type: Int32(RTM_GETROUTE), flags: 0,
            header: rtmsg(
                rtm_family: UInt8(truncatingIfNeeded: destination.family.af),
                rtm_dst_len: UInt8(truncatingIfNeeded: destination.family.bitWidth),
                rtm_src_len: 0, rtm_tos: 0, rtm_table: 0, rtm_protocol: 0, rtm_scope: 0, rtm_type: 0, rtm_flags: 0))
        do throws(NetlinkError) {
            try request.put(Int32(RTA_DST.rawValue), bytes: destination.bytes)
        } catch {
            request.free()
            throw error
        }
        let context = LookupContext()
        let rc = try exchange(request, operation) { cb in
            withExtendedLifetime(context) {
                let arg = Unmanaged.passUnretained(context).toOpaque()
                nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, onAnswer, arg)
                nl_cb_err(cb, NL_CB_CUSTOM, onError, arg)
                return nl_recvmsgs(sock, cb)
            }
        }
        if let errno = context.errno, errno != 0 {
            throw .libnl(
                NLECode(nl_syserr2nlerr(errno)), operation: operation, message: String(cString: strerror(errno)))
        }
        try check(rc, operation)
        guard let answer = context.answer else {
            throw .libnl(.notFound, operation: operation, message: "the kernel sent no route")
        }
        try check(nl_wait_for_ack(sock), "\(operation) acknowledgement")
        return answer
    }
}
