// Hand-built rtnetlink requests, for what libnl-route's objects and caches cannot express:
// dumps the kernel filters by device (NDA_IFINDEX for neighbours, ifi_index for the bridge FDB),
// and neighbour/FDB messages built attribute by attribute as iproute2 builds them.
//
// Replies are parsed one message at a time (rtnl_*_parse), never through an nl_cache: a cache
// hashes its objects and refuses two that share a key (two FDB remotes for one MAC, for one),
// which would fail the whole dump with "Object exists".

import CLibNL

/// An rtnetlink request under construction: a header struct followed by attributes.
struct Request {
    let msg: OpaquePointer

    /// A message of `type` with `flags` (NLM_F_REQUEST and NLM_F_ACK are added when sent) and
    /// `header` (ndmsg, ifinfomsg, rtmsg) as its fixed part.
    init<Header: BitwiseCopyable>(type: Int32, flags: Int32, header: Header) {
        msg = nlmsg_alloc_simple(type, flags)!
        var h = header
        let alignTo: Int32 = 4  // NLMSG_ALIGNTO
        _ = withUnsafeMutableBytes(of: &h) { nlmsg_append(msg, $0.baseAddress, $0.count, alignTo) }
    }

    func put(_ type: Int32, bytes: [UInt8]) throws(NetlinkError) {
        let rc = bytes.withUnsafeBytes { nla_put(msg, type, Int32($0.count), $0.baseAddress) }
        try check(rc, "nla_put \(type)")
    }

    func put(_ type: Int32, u32 value: UInt32) throws(NetlinkError) {
        try check(nla_put_u32(msg, type, value), "nla_put_u32 \(type)")
    }

    func free() { nlmsg_free(msg) }
}

/// Holds the per-message closure while libnl calls back into Swift.
private final class DumpContext {
    let body: (UnsafeMutablePointer<nlmsghdr>) -> Void
    init(_ body: @escaping (UnsafeMutablePointer<nlmsghdr>) -> Void) { self.body = body }
}

private let onValidMessage: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { msg, arg in
    let context = Unmanaged<DumpContext>.fromOpaque(arg!).takeUnretainedValue()
    context.body(nlmsg_hdr(msg))
    return Int32(NL_OK.rawValue)
}

extension NetlinkSession {
    /// Sends `request` and waits for the kernel's acknowledgement. Consumes the request.
    func send(_ request: Request, _ operation: @autoclosure () -> String) throws(NetlinkError) {
        // nl_send_sync frees the message whatever happens.
        try check(nl_send_sync(sock, request.msg), operation())
    }

    /// Sends `request` (consuming it) and reads the answer with a clone of the socket's callbacks,
    /// which `receive` sets up before it calls nl_recvmsgs; returns what nl_recvmsgs returned.
    func exchange(
        _ request: Request, _ operation: String, receive: (OpaquePointer) -> Int32
    ) throws(NetlinkError) -> Int32 {
        let sent = nl_send_auto(sock, request.msg)
        request.free()
        try check(sent, operation)
        let defaults = nl_socket_get_cb(sock)
        let cb = nl_cb_clone(defaults)
        nl_cb_put(defaults)
        guard let cb else { throw .invalidArgument("nl_cb_clone failed") }
        defer { nl_cb_put(cb) }
        return receive(cb)
    }

    /// Sends a dump request built by `makeRequest` and calls `body` with every reply message.
    /// A dump the kernel marks interrupted (NLM_F_DUMP_INTR: the table changed while it was being
    /// walked) is retried from the start, up to three times; `body` must tolerate being restarted.
    func dump(
        _ operation: String, request makeRequest: () throws(NetlinkError) -> Request,
        restart: () -> Void = {}, parse body: (UnsafeMutablePointer<nlmsghdr>) -> Void
    ) throws(NetlinkError) {
        var attempt = 0
        while true {
            attempt += 1
            let rc = try exchange(try makeRequest(), operation) { cb in
                withoutActuallyEscaping(body) { escapable in
                    let context = DumpContext(escapable)
                    return withExtendedLifetime(context) {
                        nl_cb_set(
                            cb, NL_CB_VALID, NL_CB_CUSTOM, onValidMessage, Unmanaged.passUnretained(context).toOpaque())
                        return nl_recvmsgs(sock, cb)
                    }
                }
            }
            if rc == -NLE_DUMP_INTR && attempt < 3 {
                restart()
                continue
            }
            try check(rc, operation)
            return
        }
    }
}
