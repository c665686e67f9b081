// nftables objects as nf_tables netlink messages: the typed layer under Netfilter's nftables
// backends, so that a bridge masquerade or a port mapping is one netlink batch instead of an
// `nft -f -` process.
//
// A batch is what `nft -f` sends for a script, message for message:
//   NFNL_MSG_BATCH_BEGIN (res_id NFNL_SUBSYS_NFTABLES)
//   NFT_MSG_NEWTABLE   "add table"       NLM_F_REQUEST: no NLM_F_EXCL, so an existing table is kept
//   NFT_MSG_NEWCHAIN   "add chain"       NLM_F_CREATE
//   NFT_MSG_DELRULE    "flush chain"     table + chain, no handle: every rule of the chain
//   NFT_MSG_DELRULE    "delete rule"     table + chain + handle
//   NFT_MSG_NEWRULE    "add rule"        NLM_F_CREATE | NLM_F_APPEND, expressions in order
//   NFNL_MSG_BATCH_END
// The kernel applies it as one transaction: every message or none. Comments are not attributes of
// their own but userdata TLVs (libnftnl's NFTNL_UDATA_{TABLE,CHAIN,RULE}_COMMENT, type 0, NUL
// included), which is where `nft list` looks for them. Expressions are what nft 1.0.6 generates
// for the same text (checked byte for byte against `nft --debug=mnl` in NFTablesEncodingTests),
// so `nft list ruleset` prints the same rules whoever added them.
//
// The issue asked for libmnl. Debian 12's libmnl-dev ships only libmnl.so, and the plugins are
// fully static executables, so messages are built with libnl-3's core message API (nlmsg_alloc,
// nla_put, nla_nest_start/end), which they already link statically, and concatenated into one
// buffer: libnl has no batch of its own.

import Addressing
import CLibNL

/// An nftables address family (NFPROTO_*), as in `table <family> <name>`.
public enum NFTFamily: UInt8, Sendable, Hashable {
    case inet = 1, ip = 2, ip6 = 10

    /// The family whose tables hold rules for `family`'s addresses: `ip` or `ip6`.
    public init(_ family: IPFamily) { self = family == .v4 ? .ip : .ip6 }

    public var name: String {
        switch self {
        case .inet: "inet"
        case .ip: "ip"
        case .ip6: "ip6"
        }
    }
}

/// A netfilter hook of a base chain (NF_INET_*).
public enum NFTHook: UInt32, Sendable, Hashable {
    case prerouting = 0, input = 1, forward = 2, output = 3, postrouting = 4
}

/// What makes a chain a base chain: `{ type <type> hook <hook> priority <priority> ; }`.
/// nft sends no policy unless the script names one, and neither does this.
public struct NFTBaseChain: Sendable, Hashable {
    public var type: String
    public var hook: NFTHook
    public var priority: Int32

    public init(type: String, hook: NFTHook, priority: Int32) {
        self.type = type
        self.hook = hook
        self.priority = priority
    }

    /// nft's named priorities for the nat hooks.
    public static let dstnat: Int32 = -100
    public static let srcnat: Int32 = 100
}

/// A register: the verdict register or one of the four 128-bit data registers (NFT_REG_*).
public enum NFTRegister: UInt32, Sendable, Hashable {
    case verdict = 0, r1 = 1, r2 = 2, r3 = 3, r4 = 4
}

/// The keys of `meta` that podnet matches (NFT_META_*).
public enum NFTMetaKey: UInt32, Sendable, Hashable {
    case iifname = 6, oifname = 7, nfproto = 15, l4proto = 16
}

/// Where a payload load starts (NFT_PAYLOAD_*_HEADER).
public enum NFTPayloadBase: UInt32, Sendable, Hashable {
    case link = 0, network = 1, transport = 2
}

/// The comparison of `cmp` (NFT_CMP_*).
public enum NFTCmpOp: UInt32, Sendable, Hashable {
    case eq = 0, neq = 1, lt = 2, lte = 3, gt = 4, gte = 5
}

/// A verdict, as `immediate` loads it into the verdict register (NF_* and NFT_* codes).
public enum NFTVerdict: Sendable, Hashable {
    case accept, drop, `continue`, `return`
    case jump(String), goto(String)

    var code: Int32 {
        switch self {
        case .drop: 0  // NF_DROP
        case .accept: 1  // NF_ACCEPT
        case .continue: -1  // NFT_CONTINUE
        case .jump: -3  // NFT_JUMP
        case .goto: -4  // NFT_GOTO
        case .return: -5  // NFT_RETURN
        }
    }

    init?(code: Int32, chain: String?) {
        switch code {
        case 0: self = .drop
        case 1: self = .accept
        case -1: self = .continue
        case -3: self = .jump(chain ?? "")
        case -4: self = .goto(chain ?? "")
        case -5: self = .return
        default: return nil
        }
    }
}

/// One expression of a rule, as the kernel's nft_expr_type names it.
public enum NFTExpression: Sendable, Hashable {
    /// `meta load <key> => reg`.
    case meta(NFTMetaKey, into: NFTRegister)
    /// `payload load <length>b @ <base> header + <offset> => reg`.
    case payload(NFTPayloadBase, offset: UInt32, length: UInt32, into: NFTRegister)
    /// `cmp <op> reg <data>`.
    case cmp(NFTCmpOp, NFTRegister, [UInt8])
    /// `bitwise reg = (reg & mask) ^ xor` on `mask.count` bytes.
    case bitwise(NFTRegister, mask: [UInt8], xor: [UInt8])
    /// `fib <flags> <result> => reg`; `fib daddr type` is `fibDaddrType`.
    case fib(flags: UInt32, result: UInt32, into: NFTRegister)
    /// `immediate reg 0 <verdict>`.
    case verdict(NFTVerdict)
    /// `immediate reg <data>`.
    case immediate([UInt8], into: NFTRegister)
    /// `nat dnat|snat <family> addr_min reg [proto_min reg]`.
    case nat(NFTNATType, family: NFTFamily, address: NFTRegister?, port: NFTRegister?)
    /// `masq`.
    case masquerade
    /// An expression this layer does not decode (only from listings).
    case other(String)

    /// `fib daddr type => reg` (NFTA_FIB_F_DADDR, NFT_FIB_RESULT_ADDRTYPE).
    public static func fibDaddrType(into r: NFTRegister) -> NFTExpression { .fib(flags: 2, result: 3, into: r) }
}

/// The two NAT types (NFT_NAT_*).
public enum NFTNATType: UInt32, Sendable, Hashable {
    case snat = 0, dnat = 1
}

/// One change in a batch.
public enum NFTOperation: Sendable, Hashable {
    /// Adds the table unless it exists (then its comment is left as it is).
    // nft add table <family> <table> { comment "<comment>" ; }
    case addTable(NFTFamily, String, comment: String?)
    /// Adds the chain unless it exists; `base` makes it a base chain.
    // nft add chain <family> <table> <chain> { [type .. hook .. priority .. ;] [comment ".." ;] }
    case addChain(NFTFamily, table: String, chain: String, base: NFTBaseChain?, comment: String?)
    /// Deletes every rule of the chain (ENOENT when the chain does not exist).
    // nft flush chain <family> <table> <chain>
    case flushChain(NFTFamily, table: String, chain: String)
    /// Appends a rule.
    // nft add rule <family> <table> <chain> <expressions> [comment "<comment>"]
    case addRule(NFTFamily, table: String, chain: String, expressions: [NFTExpression], comment: String?)
    /// Deletes one rule (ENOENT when the handle is gone).
    // nft delete rule <family> <table> <chain> handle <handle>
    case deleteRule(NFTFamily, table: String, chain: String, handle: UInt64)

    /// "NFT_MSG_NEWRULE inet cni_plugins_masquerade masq_checks", for error messages.
    public var description: String {
        switch self {
        case .addTable(let f, let t, _): "NFT_MSG_NEWTABLE \(f.name) \(t)"
        case .addChain(let f, let t, let c, _, _): "NFT_MSG_NEWCHAIN \(f.name) \(t) \(c)"
        case .flushChain(let f, let t, let c): "NFT_MSG_DELRULE \(f.name) \(t) \(c) (flush)"
        case .addRule(let f, let t, let c, _, _): "NFT_MSG_NEWRULE \(f.name) \(t) \(c)"
        case .deleteRule(let f, let t, let c, let h): "NFT_MSG_DELRULE \(f.name) \(t) \(c) handle \(h)"
        }
    }
}

/// A list of changes that the kernel applies all or nothing.
public struct NFTBatch: Sendable, Hashable {
    public var operations: [NFTOperation]

    public init(_ operations: [NFTOperation] = []) { self.operations = operations }

    public var isEmpty: Bool { operations.isEmpty }

    public mutating func append(_ op: NFTOperation) { operations.append(op) }

    /// The batch as one buffer of netlink messages: BATCH_BEGIN with sequence number `first`,
    /// the operations with `first + 1...`, BATCH_END. With `acknowledged`, every operation asks
    /// for an acknowledgement (NLM_F_ACK), so that success is confirmed and not only inferred.
    public func encoded(first: UInt32 = 0, acknowledged: Bool = true) throws(NetlinkError) -> [UInt8] {
        var out = NFTMessage.batchMarker(NFTConst.batchBegin, seq: first)
        var seq = first
        for op in operations {
            seq &+= 1
            out += try NFTMessage.encode(op, seq: seq, ack: acknowledged)
        }
        out += NFTMessage.batchMarker(NFTConst.batchEnd, seq: seq &+ 1)
        return out
    }
}

// MARK: - Constants (linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h)

enum NFTConst {
    static let subsys: Int32 = 10  // NFNL_SUBSYS_NFTABLES
    static let batchBegin: Int32 = 0x10  // NFNL_MSG_BATCH_BEGIN (NLMSG_MIN_TYPE)
    static let batchEnd: Int32 = 0x11  // NFNL_MSG_BATCH_END
    static let newTable: Int32 = 0, newChain: Int32 = 3, newRule: Int32 = 6, getRule: Int32 = 7
    static let delRule: Int32 = 8
    static let nested: Int32 = 0x8000  // NLA_F_NESTED

    // NFTA_TABLE_*, NFTA_CHAIN_*, NFTA_HOOK_*, NFTA_RULE_*
    static let tableName: Int32 = 1, tableFlags: Int32 = 2, tableUserdata: Int32 = 6
    static let chainTable: Int32 = 1, chainName: Int32 = 3, chainHook: Int32 = 4, chainType: Int32 = 7
    static let chainUserdata: Int32 = 12
    static let hookNum: Int32 = 1, hookPriority: Int32 = 2
    static let ruleTable: Int32 = 1, ruleChain: Int32 = 2, ruleHandle: Int32 = 3, ruleExpressions: Int32 = 4
    static let ruleUserdata: Int32 = 7
    // NFTA_LIST_ELEM, NFTA_EXPR_*, NFTA_DATA_*, NFTA_VERDICT_*
    static let listElem: Int32 = 1, exprName: Int32 = 1, exprData: Int32 = 2
    static let dataValue: Int32 = 1, dataVerdict: Int32 = 2, verdictCode: Int32 = 1, verdictChain: Int32 = 2
}

// MARK: - Encoding

enum NFTMessage {
    /// BATCH_BEGIN or BATCH_END: an nfgenmsg with res_id NFNL_SUBSYS_NFTABLES, no attributes.
    static func batchMarker(_ type: Int32, seq: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        out += le32(20)
        out += le16(UInt16(truncatingIfNeeded: type)) + le16(UInt16(truncatingIfNeeded: NLM_F_REQUEST))
        out += le32(seq) + le32(0)
        out += [0, 0, 0, UInt8(truncatingIfNeeded: NFTConst.subsys)]  // AF_UNSPEC, NFNETLINK_V0, be16 res_id
        return out
    }

    static func encode(_ op: NFTOperation, seq: UInt32, ack: Bool) throws(NetlinkError) -> [UInt8] {
        let a = ack ? NLM_F_ACK : 0
        switch op {
        case .addTable(let family, let name, let comment):
            let m = try Builder(NFTConst.newTable, flags: NLM_F_REQUEST | a, family: family)
            defer { m.free() }
            try m.string(NFTConst.tableName, name)
            try m.u32(NFTConst.tableFlags, 0)
            if let comment { try m.bytes(NFTConst.tableUserdata, try userdataComment(comment)) }
            return m.bytes(seq: seq)
        case .addChain(let family, let table, let chain, let base, let comment):
            let m = try Builder(NFTConst.newChain, flags: NLM_F_REQUEST | NLM_F_CREATE | a, family: family)
            defer { m.free() }
            try m.string(NFTConst.chainTable, table)
            try m.string(NFTConst.chainName, chain)
            if let base {
                try m.string(NFTConst.chainType, base.type)
                try m.nest(NFTConst.chainHook) { () throws(NetlinkError) in
                    try m.u32(NFTConst.hookNum, base.hook.rawValue)
                    try m.u32(NFTConst.hookPriority, UInt32(bitPattern: base.priority))
                }
            }
            if let comment { try m.bytes(NFTConst.chainUserdata, try userdataComment(comment)) }
            return m.bytes(seq: seq)
        case .flushChain(let family, let table, let chain):
            let m = try Builder(NFTConst.delRule, flags: NLM_F_REQUEST | a, family: family)
            defer { m.free() }
            try m.string(NFTConst.ruleTable, table)
            try m.string(NFTConst.ruleChain, chain)
            return m.bytes(seq: seq)
        case .deleteRule(let family, let table, let chain, let handle):
            let m = try Builder(NFTConst.delRule, flags: NLM_F_REQUEST | a, family: family)
            defer { m.free() }
            try m.string(NFTConst.ruleTable, table)
            try m.string(NFTConst.ruleChain, chain)
            try m.u64(NFTConst.ruleHandle, handle)
            return m.bytes(seq: seq)
        case .addRule(let family, let table, let chain, let expressions, let comment):
            let m = try Builder(
                NFTConst.newRule, flags: NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | a, family: family)
            defer { m.free() }
            try m.string(NFTConst.ruleTable, table)
            try m.string(NFTConst.ruleChain, chain)
            try m.nest(NFTConst.ruleExpressions) { () throws(NetlinkError) in
                for e in expressions { try encode(e, into: m) }
            }
            if let comment { try m.bytes(NFTConst.ruleUserdata, try userdataComment(comment)) }
            return m.bytes(seq: seq)
        }
    }

    /// One NFTA_LIST_ELEM: the expression's name and its NFTA_EXPR_DATA, attributes in nft's order.
    static func encode(_ e: NFTExpression, into m: Builder) throws(NetlinkError) {
        let name: String
        var body: (() throws(NetlinkError) -> Void)? = nil
        switch e {
        case .meta(let key, let reg):
            name = "meta"
            body = { () throws(NetlinkError) in
                try m.u32(2, key.rawValue)  // NFTA_META_KEY
                try m.u32(1, reg.rawValue)  // NFTA_META_DREG
            }
        case .payload(let base, let offset, let length, let reg):
            name = "payload"
            body = { () throws(NetlinkError) in
                try m.u32(1, reg.rawValue)  // NFTA_PAYLOAD_DREG
                try m.u32(2, base.rawValue)  // NFTA_PAYLOAD_BASE
                try m.u32(3, offset)  // NFTA_PAYLOAD_OFFSET
                try m.u32(4, length)  // NFTA_PAYLOAD_LEN
            }
        case .cmp(let op, let reg, let data):
            name = "cmp"
            body = { () throws(NetlinkError) in
                try m.u32(1, reg.rawValue)  // NFTA_CMP_SREG
                try m.u32(2, op.rawValue)  // NFTA_CMP_OP
                try m.value(3, data)  // NFTA_CMP_DATA
            }
        case .bitwise(let reg, let mask, let xor):
            name = "bitwise"
            body = { () throws(NetlinkError) in
                try m.u32(1, reg.rawValue)  // NFTA_BITWISE_SREG
                try m.u32(2, reg.rawValue)  // NFTA_BITWISE_DREG
                try m.u32(3, try u32(mask.count, "bitwise length"))  // NFTA_BITWISE_LEN
                try m.value(4, mask)  // NFTA_BITWISE_MASK
                try m.value(5, xor)  // NFTA_BITWISE_XOR
            }
        case .fib(let flags, let result, let reg):
            name = "fib"
            body = { () throws(NetlinkError) in
                try m.u32(3, flags)  // NFTA_FIB_FLAGS
                try m.u32(2, result)  // NFTA_FIB_RESULT
                try m.u32(1, reg.rawValue)  // NFTA_FIB_DREG
            }
        case .verdict(let v):
            name = "immediate"
            body = { () throws(NetlinkError) in
                try m.u32(1, NFTRegister.verdict.rawValue)  // NFTA_IMMEDIATE_DREG
                try m.nest(2) { () throws(NetlinkError) in  // NFTA_IMMEDIATE_DATA
                    try m.nest(NFTConst.dataVerdict) { () throws(NetlinkError) in
                        try m.u32(NFTConst.verdictCode, UInt32(bitPattern: v.code))
                        switch v {
                        case .jump(let c), .goto(let c): try m.string(NFTConst.verdictChain, c)
                        default: break
                        }
                    }
                }
            }
        case .immediate(let data, let reg):
            name = "immediate"
            body = { () throws(NetlinkError) in
                try m.u32(1, reg.rawValue)
                try m.value(2, data)
            }
        case .nat(let type, let family, let address, let port):
            name = "nat"
            body = { () throws(NetlinkError) in
                try m.u32(1, type.rawValue)  // NFTA_NAT_TYPE
                try m.u32(2, UInt32(truncatingIfNeeded: family.rawValue))  // NFTA_NAT_FAMILY
                if let address { try m.u32(3, address.rawValue) }  // NFTA_NAT_REG_ADDR_MIN
                if let port { try m.u32(5, port.rawValue) }  // NFTA_NAT_REG_PROTO_MIN
                if port != nil { try m.u32(7, 2) }  // NFTA_NAT_FLAGS: NF_NAT_RANGE_PROTO_SPECIFIED
            }
        case .masquerade:
            name = "masq"  // with an empty NFTA_EXPR_DATA, as nft sends it
        case .other(let n):
            throw .invalidArgument("cannot encode nftables expression \"\(n)\"")
        }
        try m.nest(NFTConst.listElem) { () throws(NetlinkError) in
            try m.string(NFTConst.exprName, name)
            if let body { try m.nest(NFTConst.exprData, body) } else { try m.emptyNest(NFTConst.exprData) }
        }
    }

    /// A comment as libnftnl's userdata: one TLV of type 0 (NFTNL_UDATA_*_COMMENT), NUL included.
    static func userdataComment(_ comment: String) throws(NetlinkError) -> [UInt8] {
        let bytes = Array(comment.utf8) + [0]
        guard let length = UInt8(exactly: bytes.count) else {
            throw .invalidArgument("nftables comment of \(bytes.count - 1) bytes is too long (at most 254)")
        }
        return [0, length] + bytes
    }

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)] }
    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

/// One nf_tables message under construction in a libnl nl_msg.
final class Builder {
    let msg: OpaquePointer

    init(_ type: Int32, flags: Int32, family: NFTFamily) throws(NetlinkError) {
        guard let m = nlmsg_alloc_simple(NFTConst.subsys << 8 | type, flags) else {
            throw .invalidArgument("nlmsg_alloc_simple failed")
        }
        msg = m
        var header: (UInt8, UInt8, UInt16) = (family.rawValue, 0, 0)  // nfgenmsg: family, NFNETLINK_V0, res_id
        let rc = withUnsafeMutableBytes(of: &header) { nlmsg_append(m, $0.baseAddress, 4, 4) }
        if rc < 0 { nlmsg_free(m) }
        try check(rc, "nlmsg_append nfgenmsg")
    }

    func free() { nlmsg_free(msg) }

    func string(_ type: Int32, _ s: String) throws(NetlinkError) {
        try check(nla_put_string(msg, type, s), "nla_put_string \(type)")
    }

    /// A big-endian u32, as nf_tables reads every integer attribute.
    func u32(_ type: Int32, _ v: UInt32) throws(NetlinkError) {
        try check(nla_put_u32(msg, type, v.bigEndian), "nla_put_u32 \(type)")
    }

    func u64(_ type: Int32, _ v: UInt64) throws(NetlinkError) {
        try check(nla_put_u64(msg, type, v.bigEndian), "nla_put_u64 \(type)")
    }

    func bytes(_ type: Int32, _ b: [UInt8]) throws(NetlinkError) {
        let rc = b.withUnsafeBytes { nla_put(msg, type, Int32(truncatingIfNeeded: $0.count), $0.baseAddress) }
        try check(rc, "nla_put \(type)")
    }

    /// `type` { NFTA_DATA_VALUE: data }.
    func value(_ type: Int32, _ data: [UInt8]) throws(NetlinkError) {
        try nest(type) { () throws(NetlinkError) in try bytes(NFTConst.dataValue, data) }
    }

    func nest(_ type: Int32, _ body: () throws(NetlinkError) -> Void) throws(NetlinkError) {
        guard let start = nla_nest_start(msg, type | NFTConst.nested) else {
            throw .invalidArgument("nla_nest_start \(type): message too long")
        }
        try body()
        try check(nla_nest_end(msg, start), "nla_nest_end \(type)")
    }

    /// A nested attribute with nothing in it. (nla_nest_end drops empty nests.)
    func emptyNest(_ type: Int32) throws(NetlinkError) {
        try check(nla_put(msg, type | NFTConst.nested, 0, nil), "nla_put \(type)")
    }

    /// The finished message with sequence number `seq`.
    func bytes(seq: UInt32) -> [UInt8] {
        let h = nlmsg_hdr(msg)!
        h.pointee.nlmsg_seq = seq
        return Array(UnsafeRawBufferPointer(start: h, count: Int(h.pointee.nlmsg_len)))
    }
}
