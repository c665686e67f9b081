// A NETLINK_NETFILTER socket that applies nf_tables batches and lists rules.
//
// Sending a batch is one sendmsg. The kernel (nfnetlink_rcv_batch) processes it synchronously,
// inside that call: when sendmsg returns, every acknowledgement and error is already queued on
// the socket. So the replies are read without blocking until the queue is empty, which can
// never hang on a batch the kernel dropped without a word; each operation asks for an ACK, so
// a missing one is noticed. Errors come one per failed message (its sequence number names the
// operation), or once for the whole batch on BATCH_BEGIN's number (no CAP_NET_ADMIN, commit
// failure).
//
// Listing is a GETRULE dump filtered by the kernel to one table (and chain): the rules with their
// handles, userdata comments and expressions, decoded back into `NFTExpression`s.
//
// Closing costs more than sending. Every commit queues its transactions for release after an RCU
// grace period, and the release of a NETLINK_NETFILTER socket waits for that work to finish
// (nf_tables' NETLINK_URELEASE notifier flushes it): 5-15 ms on a busy node, more than the whole
// batch, paid by nft and iptables-nft at their exit too. The rules are in place before the batch
// returns, so nothing of the pod's needs that wait: `closeDetached` hands the last reference of
// the socket to a detached child (`/bin/cat` on a pipe that we close after the socket, output to
// /dev/null), whose exit pays it instead, as DeferredUnregister does for a veth's unregister.

import Addressing
import CLibNL

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A rule as a GETRULE dump returns it.
public struct NFTListedRule: Sendable, Hashable {
    public var chain: String
    public var handle: UInt64
    /// The userdata comment (NFTNL_UDATA_RULE_COMMENT), without its NUL.
    public var comment: String?
    public var expressions: [NFTExpression]

    public init(chain: String, handle: UInt64, comment: String?, expressions: [NFTExpression]) {
        self.chain = chain
        self.handle = handle
        self.comment = comment
        self.expressions = expressions
    }
}

/// The nf_tables operations the Netfilter library needs: apply a batch, list a chain's rules.
/// Open it in the network namespace to program (the socket stays bound to it).
public final class NFTablesSession {
    let sock: OpaquePointer
    private var sequence: UInt32 = 1

    /// Opens a NETLINK_NETFILTER socket in the calling thread's network namespace. Fails with
    /// `.notSupported`-like codes where the kernel has no nfnetlink.
    public init() throws(NetlinkError) {
        guard let s = nl_socket_alloc() else { throw .invalidArgument("nl_socket_alloc failed") }
        let rc = nl_connect(s, NETLINK_NETFILTER)
        if rc < 0 { nl_socket_free(s) }
        try check(rc, "nl_connect NETLINK_NETFILTER")
        sock = s
    }

    /// The write end of the pipe a `closeDetached` child reads until we are gone.
    private var holderPipe: Int32 = -1

    deinit {
        nl_socket_free(sock)
        // Only now may the child see end of file, exit and release the socket last.
        if holderPipe >= 0 { close(holderPipe) }
    }

    /// Lets the session end without waiting for nf_tables' release work (see the file's note): a
    /// detached `/bin/cat` inherits the socket and reads a pipe whose write end this session
    /// closes only after its own socket, so that the child's exit, not our close, releases the
    /// socket. When the child cannot be started, our close waits as usual. For short-lived
    /// processes: the child is never reaped by this process.
    public func closeDetached() {
        let fd = nl_socket_get_fd(sock)
        var ends: [Int32] = [-1, -1]
        guard fd >= 0, holderPipe < 0, pipe(&ends) == 0 else { return }
        defer { close(ends[0]) }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }  // the child gets the read end as its stdin only
        let flags = fcntl(fd, F_GETFD)
        guard flags >= 0, fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) == 0 else {
            close(ends[1])
            return
        }
        defer { _ = fcntl(fd, F_SETFD, flags) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, ends[0], 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(0x80))  // POSIX_SPAWN_SETSID
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("cat"), nil]
        defer { for a in argv { free(a) } }
        let env: [UnsafeMutablePointer<CChar>?] = [nil]
        if posix_spawn(&pid, "/bin/cat", &actions, &attr, argv, env) == 0 {
            holderPipe = ends[1]
        } else {
            close(ends[1])
        }
    }

    /// Applies `batch` as one transaction. Throws the first error the kernel reported, naming the
    /// operation (`NFT_MSG_NEWRULE inet cni_plugins_masquerade masq_checks: ...`); then nothing of
    /// the batch was applied.
    public func apply(_ batch: NFTBatch) throws(NetlinkError) {
        guard !batch.isEmpty else { return }
        let first = sequence
        sequence &+= UInt32(truncatingIfNeeded: batch.operations.count + 2)
        var buffer = try batch.encoded(first: first)
        try drain { _, _ in }  // replies of an earlier exchange that failed half-way
        let sent = buffer.withUnsafeMutableBytes { nl_sendto(sock, $0.baseAddress, $0.count) }
        try check(sent, "nf_tables batch of \(batch.operations.count)")

        var acked = Set<UInt32>()
        var failure: NetlinkError?
        try drain { seq, error in
            if error == 0 {
                acked.insert(seq)
                return
            }
            guard failure == nil else { return }
            let index = Int(seq &- first) - 1
            let what =
                batch.operations.indices.contains(index)
                ? batch.operations[index].description : "nf_tables batch of \(batch.operations.count)"
            failure = kernelError(-error, what)
        }
        if let failure { throw failure }
        guard acked.count >= batch.operations.count else {
            throw .invalidArgument(
                "nf_tables batch: the kernel acknowledged \(acked.count) of \(batch.operations.count) messages")
        }
    }

    /// The rules of `table` (only of `chain` when given), in order, with their handles; empty when
    /// the table or chain does not exist. A dump the kernel marks interrupted (the rule set changed
    /// meanwhile) is repeated, up to three times.
    // nft -a list chain <family> <table> <chain>
    public func rules(_ family: NFTFamily, table: String, chain: String? = nil) throws(NetlinkError) -> [NFTListedRule]
    {
        let operation = "NFT_MSG_GETRULE dump \(family.name) \(table)" + (chain.map { " \($0)" } ?? "")
        var attempt = 0
        while true {
            attempt += 1
            let m = try Builder(NFTConst.getRule, flags: NLM_F_REQUEST | NLM_F_DUMP, family: family)
            var request: [UInt8]
            do throws(NetlinkError) {
                try m.string(NFTConst.ruleTable, table)
                if let chain { try m.string(NFTConst.ruleChain, chain) }
                request = m.bytes(seq: sequence)
                m.free()
            } catch {
                m.free()
                throw error
            }
            sequence &+= 1
            let sent = request.withUnsafeMutableBytes { nl_sendto(sock, $0.baseAddress, $0.count) }
            try check(sent, operation)
            var out: [NFTListedRule] = []
            var interrupted = false
            let end = try receiveDump(operation) { header, payload in
                if header.flags & UInt16(truncatingIfNeeded: NLM_F_DUMP_INTR) != 0 { interrupted = true }
                if header.type == UInt16(truncatingIfNeeded: NFTConst.subsys << 8 | NFTConst.newRule),
                    let r = NFTDecoder.rule(payload)
                {
                    out.append(r)
                }
            }
            if let errno = end {
                if errno == ENOENT { return [] }
                throw kernelError(errno, operation)
            }
            if interrupted && attempt < 3 { continue }
            return out
        }
    }

    // MARK: - Receiving

    private struct Header {
        var type: UInt16
        var flags: UInt16
        var seq: UInt32
    }

    /// Reads every queued message without blocking; calls `ack` with the sequence number and
    /// error (0 or a negative errno) of each NLMSG_ERROR.
    private func drain(_ ack: (UInt32, Int32) -> Void) throws(NetlinkError) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes {
                recv(nl_socket_get_fd(sock), $0.baseAddress, $0.count, Int32(truncatingIfNeeded: MSG_DONTWAIT))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                throw kernelError(errno, "recv NETLINK_NETFILTER")
            }
            forEachMessage(buffer[..<n]) { h, payload in
                if h.type == UInt16(truncatingIfNeeded: NLMSG_ERROR), payload.count >= 4 {
                    ack(h.seq, NFTDecoder.int32(payload))
                }
            }
        }
    }

    /// Reads a dump's messages, blocking, until NLMSG_DONE or an error; returns the errno of
    /// the error, nil when the dump ended normally.
    private func receiveDump(
        _ operation: String, _ body: (Header, ArraySlice<UInt8>) -> Void
    ) throws(NetlinkError) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes {
                recv(nl_socket_get_fd(sock), $0.baseAddress, $0.count, 0)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw kernelError(errno, operation)
            }
            if n == 0 { throw .invalidArgument("\(operation): the socket was closed") }
            var result: Int32?? = nil
            forEachMessage(buffer[..<n]) { h, payload in
                guard result == nil else { return }
                if h.type == UInt16(truncatingIfNeeded: NLMSG_DONE) {
                    let e = payload.count >= 4 ? NFTDecoder.int32(payload) : 0
                    result = .some(e < 0 ? -e : nil)
                } else if h.type == UInt16(truncatingIfNeeded: NLMSG_ERROR) {
                    let e = payload.count >= 4 ? NFTDecoder.int32(payload) : 0
                    result = .some(e < 0 ? -e : nil)
                } else {
                    body(h, payload)
                }
            }
            if let result { return result }
        }
    }

    private func forEachMessage(_ bytes: ArraySlice<UInt8>, _ body: (Header, ArraySlice<UInt8>) -> Void) {
        var i = bytes.startIndex
        while bytes.endIndex - i >= 16 {
            let length = Int(NFTDecoder.le32(bytes, i))
            guard length >= 16, i + length <= bytes.endIndex else { return }
            let h = Header(
                type: NFTDecoder.le16(bytes, i + 4), flags: NFTDecoder.le16(bytes, i + 6),
                seq: NFTDecoder.le32(bytes, i + 8))
            body(h, bytes[(i + 16)..<(i + length)])
            i += (length + 3) & ~3
        }
    }
}

/// A kernel errno as a NetlinkError: libnl's code for it, and the kernel's own words.
func kernelError(_ errno: Int32, _ operation: String) -> NetlinkError {
    .libnl(NLECode(nl_syserr2nlerr(errno)), operation: operation, message: String(cString: strerror(errno)))
}

// MARK: - Decoding

/// Decodes GETRULE replies: attributes are little-endian TLVs, nf_tables integers big-endian.
enum NFTDecoder {
    static func le16(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt16 { UInt16(b[i]) | UInt16(b[i + 1]) << 8 }
    static func le32(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt32 {
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }
    static func int32(_ b: ArraySlice<UInt8>) -> Int32 { Int32(bitPattern: le32(b, b.startIndex)) }
    static func be32(_ b: ArraySlice<UInt8>) -> UInt32? {
        guard b.count >= 4 else { return nil }
        return b.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
    static func be64(_ b: ArraySlice<UInt8>) -> UInt64? {
        guard b.count >= 8 else { return nil }
        return b.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
    static func string(_ b: ArraySlice<UInt8>) -> String {
        String(decoding: b.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// The attributes of `b` by type (NLA_F_NESTED and NLA_F_NET_BYTEORDER masked off); the
    /// last of a repeated type wins, `list` keeps them all in order.
    static func attributes(_ b: ArraySlice<UInt8>) -> [(type: Int, value: ArraySlice<UInt8>)] {
        var out: [(Int, ArraySlice<UInt8>)] = []
        var i = b.startIndex
        while b.endIndex - i >= 4 {
            let length = Int(le16(b, i))
            guard length >= 4, i + length <= b.endIndex else { break }
            out.append((Int(le16(b, i + 2) & 0x3fff), b[(i + 4)..<(i + length)]))
            i += (length + 3) & ~3
        }
        return out
    }

    static func map(_ b: ArraySlice<UInt8>) -> [Int: ArraySlice<UInt8>] {
        var out: [Int: ArraySlice<UInt8>] = [:]
        for (t, v) in attributes(b) { out[t] = v }
        return out
    }

    /// A NEWRULE message's payload (nfgenmsg and attributes).
    static func rule(_ payload: ArraySlice<UInt8>) -> NFTListedRule? {
        guard payload.count >= 4 else { return nil }
        let a = map(payload.dropFirst(4))
        guard let chain = a[Int(NFTConst.ruleChain)].map(string),
            let handle = a[Int(NFTConst.ruleHandle)].flatMap(be64)
        else { return nil }
        let expressions = attributes(a[Int(NFTConst.ruleExpressions)] ?? []).map { expression(map($0.value)) }
        return NFTListedRule(
            chain: chain, handle: handle, comment: a[Int(NFTConst.ruleUserdata)].flatMap(comment),
            expressions: expressions)
    }

    /// The comment TLV (type 0) of libnftnl userdata.
    static func comment(_ udata: ArraySlice<UInt8>) -> String? {
        var i = udata.startIndex
        while udata.endIndex - i >= 2 {
            let type = udata[i], length = Int(udata[i + 1])
            guard i + 2 + length <= udata.endIndex else { return nil }
            if type == 0 { return string(udata[(i + 2)..<(i + 2 + length)]) }
            i += 2 + length
        }
        return nil
    }

    static func value(_ nested: ArraySlice<UInt8>?) -> [UInt8] {
        Array(map(nested ?? [])[Int(NFTConst.dataValue)] ?? [])
    }

    static func expression(_ elem: [Int: ArraySlice<UInt8>]) -> NFTExpression {
        let name = elem[1].map(string) ?? ""
        let d = map(elem[2] ?? [])
        func u32(_ t: Int) -> UInt32? { d[t].flatMap(be32) }
        func reg(_ t: Int) -> NFTRegister? { u32(t).flatMap { NFTRegister(rawValue: $0) } }
        switch name {
        case "meta":
            if let k = u32(2).flatMap(NFTMetaKey.init(rawValue:)), let r = reg(1) { return .meta(k, into: r) }
        case "payload":
            if let b = u32(2).flatMap(NFTPayloadBase.init(rawValue:)), let o = u32(3), let l = u32(4), let r = reg(1) {
                return .payload(b, offset: o, length: l, into: r)
            }
        case "cmp":
            if let r = reg(1), let op = u32(2).flatMap(NFTCmpOp.init(rawValue:)) { return .cmp(op, r, value(d[3])) }
        case "bitwise":
            if let r = reg(1) { return .bitwise(r, mask: value(d[4]), xor: value(d[5])) }
        case "fib":
            if let f = u32(3), let res = u32(2), let r = reg(1) { return .fib(flags: f, result: res, into: r) }
        case "immediate":
            guard let r = reg(1) else { break }
            if r == .verdict {
                let v = map(map(d[2] ?? [])[Int(NFTConst.dataVerdict)] ?? [])
                if let code = v[Int(NFTConst.verdictCode)].flatMap(be32),
                    let verdict = NFTVerdict(
                        code: Int32(bitPattern: code), chain: v[Int(NFTConst.verdictChain)].map(string))
                {
                    return .verdict(verdict)
                }
            } else {
                return .immediate(value(d[2]), into: r)
            }
        case "nat":
            if let t = u32(1).flatMap(NFTNATType.init(rawValue:)),
                let f = u32(2).flatMap({ UInt8(exactly: $0) }).flatMap(NFTFamily.init(rawValue:))
            {
                return .nat(t, family: f, address: reg(3), port: reg(5))
            }
        case "masq":
            return .masquerade
        default: break
        }
        return .other(name)
    }
}
