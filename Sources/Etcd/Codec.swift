// The JSON of etcd's v3 HTTP gateway (grpc-gateway over the gRPC API), both ways.
//
// The gateway's quirks, all handled here and nowhere else:
// - bytes fields (keys, values, range ends) are standard base64 with padding;
// - int64/uint64 fields are JSON strings in answers (lease IDs exceed 2^53); requests accept
//   strings, and this client sends strings;
// - fields at their default value are left out of answers: a range miss has no `kvs`, a failed txn
//   no `succeeded`, a PUT event no `type`, a key without a lease no `lease`. Every field decodes
//   "missing = zero";
// - streams (watch, keepalive) are newline-delimited objects wrapped as `{"result":{...}}`, and an
//   error inside a stream is `{"error":{...}}`, not wrapped;
// - unary errors are `{"error":"<msg>","message":"<msg>","code":<gRPC code>}` (3.4) or
//   `{"code":..,"message":..}` (3.5+), with an HTTP status derived from the code.
// Requests are written by hand, field by field, so their text is fixed (golden tests compare it).

import JSONValue

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

// MARK: - Requests

/// Writes one JSON object, fields in the order they are added. Default values are left out by the
/// callers, as etcd does.
struct JSONObjectWriter {
    private var text = "{"
    private var empty = true

    private mutating func name(_ name: String) {
        if !empty { text += "," }
        empty = false
        text += "\"\(name)\":"
    }

    mutating func bytes(_ name: String, _ value: [UInt8]) {
        self.name(name)
        text += "\"" + Data(value).base64EncodedString() + "\""
    }

    /// An int64 field, as a string: lease IDs do not fit a double.
    mutating func int(_ name: String, _ value: Int64) {
        self.name(name)
        text += "\"\(value)\""
    }

    mutating func bool(_ name: String, _ value: Bool) {
        self.name(name)
        text += value ? "true" : "false"
    }

    mutating func string(_ name: String, _ value: String) {
        self.name(name)
        text += jsonQuoted(value)
    }

    /// A field whose value is already JSON (a nested object or an array).
    mutating func raw(_ name: String, _ json: String) {
        self.name(name)
        text += json
    }

    var json: String { text + "}" }
}

/// `value` as a JSON string literal.
func jsonQuoted(_ value: String) -> String {
    var out = "\""
    for scalar in value.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// Request bodies, one function per gateway method.
enum EtcdRequest {
    private static func rangeFields(_ w: inout JSONObjectWriter, _ range: KeyRange) {
        w.bytes("key", range.key)
        if let end = range.end { w.bytes("range_end", end) }
    }

    private static func rangeObject(
        _ range: KeyRange, revision: Int64 = 0, limit: Int64 = 0,
        keysOnly: Bool = false
    ) -> String {
        var w = JSONObjectWriter()
        rangeFields(&w, range)
        if limit != 0 { w.int("limit", limit) }
        if revision != 0 { w.int("revision", revision) }
        if keysOnly { w.bool("keys_only", true) }
        return w.json
    }

    private static func putObject(key: [UInt8], value: [UInt8], lease: LeaseID?, prevKV: Bool) -> String {
        var w = JSONObjectWriter()
        w.bytes("key", key)
        w.bytes("value", value)
        if let lease { w.int("lease", lease.rawValue) }
        if prevKV { w.bool("prev_kv", true) }
        return w.json
    }

    private static func deleteObject(_ range: KeyRange, prevKV: Bool) -> String {
        var w = JSONObjectWriter()
        rangeFields(&w, range)
        if prevKV { w.bool("prev_kv", true) }
        return w.json
    }

    /// `POST /v3/kv/range`
    static func range(_ range: KeyRange, revision: Int64 = 0, limit: Int64 = 0, keysOnly: Bool = false) -> String {
        rangeObject(range, revision: revision, limit: limit, keysOnly: keysOnly)
    }

    /// `POST /v3/kv/put`
    static func put(key: [UInt8], value: [UInt8], lease: LeaseID? = nil, prevKV: Bool = false) -> String {
        putObject(key: key, value: value, lease: lease, prevKV: prevKV)
    }

    /// `POST /v3/kv/deleterange`
    static func deleteRange(_ range: KeyRange, prevKV: Bool = false) -> String {
        deleteObject(range, prevKV: prevKV)
    }

    /// `POST /v3/kv/txn`
    static func txn(compare: [Compare], success: [TxnOp], failure: [TxnOp]) -> String {
        var w = JSONObjectWriter()
        w.raw("compare", "[" + compare.map(compareObject).joined(separator: ",") + "]")
        w.raw("success", "[" + success.map(opObject).joined(separator: ",") + "]")
        w.raw("failure", "[" + failure.map(opObject).joined(separator: ",") + "]")
        return w.json
    }

    private static func compareObject(_ c: Compare) -> String {
        var w = JSONObjectWriter()
        let target =
            switch c.target {
            case .version: "VERSION"
            case .createRevision: "CREATE"
            case .modRevision: "MOD"
            case .value: "VALUE"
            case .lease: "LEASE"
            }
        w.string("target", target)
        w.bytes("key", c.key)
        w.string("result", c.result.rawValue)
        switch c.target {
        case .version(let v): w.int("version", v)
        case .createRevision(let r): w.int("create_revision", r)
        case .modRevision(let r): w.int("mod_revision", r)
        case .value(let v): w.bytes("value", v)
        case .lease(let l): w.int("lease", l?.rawValue ?? 0)
        }
        if let end = c.rangeEnd { w.bytes("range_end", end) }
        return w.json
    }

    private static func opObject(_ op: TxnOp) -> String {
        var w = JSONObjectWriter()
        switch op.kind {
        case .range(let range, let limit, let keysOnly):
            w.raw("request_range", rangeObject(range, limit: limit, keysOnly: keysOnly))
        case .put(let key, let value, let lease, let prevKV):
            w.raw("request_put", putObject(key: key, value: value, lease: lease, prevKV: prevKV))
        case .delete(let range, let prevKV):
            w.raw("request_delete_range", deleteObject(range, prevKV: prevKV))
        }
        return w.json
    }

    /// `POST /v3/kv/compaction`
    static func compaction(revision: Int64, physical: Bool) -> String {
        var w = JSONObjectWriter()
        w.int("revision", revision)
        if physical { w.bool("physical", true) }
        return w.json
    }

    /// `POST /v3/lease/grant`; `id` nil lets the server pick.
    static func leaseGrant(ttlSeconds: Int64, id: LeaseID?) -> String {
        var w = JSONObjectWriter()
        w.int("TTL", ttlSeconds)
        if let id { w.int("ID", id.rawValue) }
        return w.json
    }

    /// `POST /v3/lease/keepalive` and `/v3/lease/revoke`.
    static func lease(_ id: LeaseID) -> String {
        var w = JSONObjectWriter()
        w.int("ID", id.rawValue)
        return w.json
    }

    /// `POST /v3/lease/timetolive`
    static func timeToLive(_ id: LeaseID, keys: Bool) -> String {
        var w = JSONObjectWriter()
        w.int("ID", id.rawValue)
        if keys { w.bool("keys", true) }
        return w.json
    }

    /// `POST /v3/auth/authenticate`
    static func authenticate(name: String, password: String) -> String {
        var w = JSONObjectWriter()
        w.string("name", name)
        w.string("password", password)
        return w.json
    }

    /// The first line of a `POST /v3/watch` body. `startRevision` 0 means "from now".
    static func watchCreate(_ range: KeyRange, startRevision: Int64, prevKV: Bool) -> String {
        var w = JSONObjectWriter()
        rangeFields(&w, range)
        if startRevision != 0 { w.int("start_revision", startRevision) }
        if prevKV { w.bool("prev_kv", true) }
        var outer = JSONObjectWriter()
        outer.raw("create_request", w.json)
        return outer.json
    }

    /// Asks the server for a progress answer on a watch stream: used as a liveness ping.
    static let watchProgress = #"{"progress_request":{}}"#
}

// MARK: - Answers

/// An answer that is JSON but not what the gateway sends: a field of the wrong type, bytes that
/// are not base64, a frame that is neither a result nor an error.
struct WireDecodingError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The fields of one JSON object of an answer, read "missing = zero" (a field set to null counts
/// as missing). Answers are parsed with JSONValue's parser, not JSONDecoder: a listing of 5000
/// leases decodes several times faster, which is most of a node's start-up outside etcd.
struct JSONFields {
    let object: [String: JSON]

    private func present(_ name: String) -> JSON? {
        guard let value = object[name], !value.isNull else { return nil }
        return value
    }

    private func mismatch(_ name: String, _ expected: String, _ value: JSON) -> WireDecodingError {
        let text = value.text
        return WireDecodingError("field \"\(name)\": expected \(expected), found \(text.prefix(60))")
    }

    /// An int64 sent as a string (etcd's answers) or as a number; 0 when missing.
    func int64(_ name: String) throws -> Int64 {
        switch present(name) {
        case nil: return 0
        case .int(let i): return i
        case .string(let text):
            guard let value = Int64(text) else { throw WireDecodingError("field \"\(name)\": not an int64: \(text)") }
            return value
        case .double(let d):
            guard let value = Int64(exactly: d) else { throw mismatch(name, "an int64", .double(d)) }
            return value
        case let other?: throw mismatch(name, "an int64", other)
        }
    }

    /// A uint64 sent as a string or a number; 0 when missing.
    func uint64(_ name: String) throws -> UInt64 {
        switch present(name) {
        case nil: return 0
        case .string(let text):
            guard let value = UInt64(text) else { throw WireDecodingError("field \"\(name)\": not a uint64: \(text)") }
            return value
        case .int(let i):
            guard let value = UInt64(exactly: i) else { throw mismatch(name, "a uint64", .int(i)) }
            return value
        case .double(let d):
            guard let value = UInt64(exactly: d) else { throw mismatch(name, "a uint64", .double(d)) }
            return value
        case let other?: throw mismatch(name, "a uint64", other)
        }
    }

    func bool(_ name: String) throws -> Bool {
        switch present(name) {
        case nil: return false
        case .bool(let b): return b
        case let other?: throw mismatch(name, "a boolean", other)
        }
    }

    func string(_ name: String) throws -> String {
        switch present(name) {
        case nil: return ""
        case .string(let s): return s
        case let other?: throw mismatch(name, "a string", other)
        }
    }

    /// A bytes field: standard base64 with padding; empty when missing.
    func bytes(_ name: String) throws -> [UInt8] {
        try Self.base64(name, try string(name))
    }

    /// A list of bytes fields (a lease's `keys`); empty when missing.
    func byteStrings(_ name: String) throws -> [[UInt8]] {
        switch present(name) {
        case nil: return []
        case .array(let items):
            return try items.map { item in
                guard case .string(let text) = item else { throw mismatch(name, "strings", item) }
                return try Self.base64(name, text)
            }
        case let other?: throw mismatch(name, "an array", other)
        }
    }

    private static func base64(_ name: String, _ text: String) throws -> [UInt8] {
        if text.isEmpty { return [] }
        guard let data = Data(base64Encoded: text) else {
            throw WireDecodingError("field \"\(name)\": not base64: \(text.prefix(60))")
        }
        return Array(data)
    }

    func object<T: WireDecodable>(_ name: String, as: T.Type = T.self) throws -> T? {
        switch present(name) {
        case nil: return nil
        case .object(let o): return try T(fields: JSONFields(object: o))
        case let other?: throw mismatch(name, "an object", other)
        }
    }

    func objects<T: WireDecodable>(_ name: String, as: T.Type = T.self) throws -> [T] {
        switch present(name) {
        case nil: return []
        case .array(let items):
            return try items.map { item in
                guard case .object(let o) = item else { throw mismatch(name, "objects", item) }
                return try T(fields: JSONFields(object: o))
            }
        case let other?: throw mismatch(name, "an array", other)
        }
    }

    /// The response header; etcd always sends one, but a cancelled watch leaves out its revision.
    func header() throws -> ResponseHeader {
        try object("header") ?? ResponseHeader()
    }
}

/// A type decoded from one JSON object of the gateway, reading its fields "missing = zero".
protocol WireDecodable {
    init(fields: JSONFields) throws
}

/// Decodes one answer (or one stream line) from its JSON text.
func decodeWire<T: WireDecodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws -> T {
    guard case .object(let o) = try JSON(parsing: bytes) else { throw WireDecodingError("not a JSON object") }
    return try T(fields: JSONFields(object: o))
}

extension ResponseHeader: WireDecodable {
    init(fields c: JSONFields) throws {
        self.init()
        clusterID = try c.uint64("cluster_id")
        memberID = try c.uint64("member_id")
        revision = try c.int64("revision")
        raftTerm = try c.uint64("raft_term")
    }
}

extension KeyValue: WireDecodable {
    init(fields c: JSONFields) throws {
        let lease = try c.int64("lease")
        self.init(
            key: try c.bytes("key"), value: try c.bytes("value"),
            createRevision: try c.int64("create_revision"), modRevision: try c.int64("mod_revision"),
            version: try c.int64("version"), lease: lease == 0 ? nil : LeaseID(lease))
    }
}

extension RangeResponse: WireDecodable {
    init(fields c: JSONFields) throws {
        header = try c.header()
        kvs = try c.objects("kvs")
        more = try c.bool("more")
        count = try c.int64("count")
    }
}

extension PutResponse: WireDecodable {
    init(fields c: JSONFields) throws {
        header = try c.header()
        prevKV = try c.object("prev_kv")
    }
}

extension DeleteResponse: WireDecodable {
    init(fields c: JSONFields) throws {
        header = try c.header()
        deleted = try c.int64("deleted")
        prevKVs = try c.objects("prev_kvs")
    }
}

/// One element of a txn answer's `responses`: exactly one of its fields is set.
struct TxnOpResponseWire: WireDecodable {
    var response: TxnOpResponse?
    init(fields c: JSONFields) throws {
        if let r: RangeResponse = try c.object("response_range") {
            response = .range(r)
        } else if let r: PutResponse = try c.object("response_put") {
            response = .put(r)
        } else if let r: DeleteResponse = try c.object("response_delete_range") {
            response = .delete(r)
        } else {
            response = nil  // a nested txn: this client never sends one
        }
    }
}

extension TxnResponse: WireDecodable {
    init(fields c: JSONFields) throws {
        header = try c.header()
        succeeded = try c.bool("succeeded")
        responses = try c.objects("responses", as: TxnOpResponseWire.self).compactMap(\.response)
    }
}

/// `/v3/lease/grant`: `error` is set (with HTTP 200) when the server could not grant.
struct LeaseGrantWire: WireDecodable {
    var grant: LeaseGrant
    var error: String
    init(fields c: JSONFields) throws {
        grant = LeaseGrant(id: LeaseID(try c.int64("ID")), ttl: .seconds(try c.int64("TTL")), header: try c.header())
        error = try c.string("error")
    }
}

/// `/v3/lease/keepalive`, one per stream line. A TTL of 0 (left out) means the lease is gone.
struct LeaseKeepAliveWire: WireDecodable {
    var header: ResponseHeader
    var id: LeaseID
    var ttl: Int64
    init(fields c: JSONFields) throws {
        header = try c.header()
        id = LeaseID(try c.int64("ID"))
        ttl = try c.int64("TTL")
    }
}

extension LeaseTimeToLive: WireDecodable {
    init(fields c: JSONFields) throws {
        header = try c.header()
        id = LeaseID(try c.int64("ID"))
        let ttl = try c.int64("TTL")
        remaining = ttl < 0 ? nil : .seconds(ttl)
        granted = .seconds(try c.int64("grantedTTL"))
        keys = try c.byteStrings("keys")
    }
}

/// `/v3/auth/authenticate`
struct AuthenticateWire: WireDecodable {
    var token: String
    init(fields c: JSONFields) throws {
        token = try c.string("token")
    }
}

/// `/v3/kv/compaction` and `/v3/lease/revoke`: only a header.
struct HeaderOnlyWire: WireDecodable {
    var header: ResponseHeader
    init(fields c: JSONFields) throws {
        header = try c.header()
    }
}

extension WatchEvent: WireDecodable {
    init(fields c: JSONFields) throws {
        let type = try c.string("type")
        switch type {
        case "", "PUT": kind = .put
        case "DELETE": kind = .delete
        default:
            throw WireDecodingError("unknown event type \(type)")
        }
        kv = try c.object("kv") ?? KeyValue(key: [])
        prevKV = try c.object("prev_kv")
    }
}

/// One answer on a watch stream.
struct WatchResponseWire: WireDecodable {
    var header: ResponseHeader
    var watchID: Int64
    var created: Bool
    var canceled: Bool
    var compactRevision: Int64
    var cancelReason: String
    var events: [WatchEvent]
    init(fields c: JSONFields) throws {
        header = try c.header()
        watchID = try c.int64("watch_id")
        created = try c.bool("created")
        canceled = try c.bool("canceled")
        compactRevision = try c.int64("compact_revision")
        cancelReason = try c.string("cancel_reason")
        events = try c.objects("events")
    }
}

/// An error answer: unary (`"error"` is the message text) or inside a stream (`"error"` is this
/// object, with `grpc_code` on 3.4 and `code` on 3.5+).
struct ErrorWire: WireDecodable, Hashable {
    var code: GRPCStatusCode
    var message: String
    init(code: GRPCStatusCode, message: String) {
        self.code = code
        self.message = message
    }
    init(fields c: JSONFields) throws {
        let code = try c.int64("code")
        self.code = GRPCStatusCode(rawValue: Int(code != 0 ? code : try c.int64("grpc_code")))
        var message = try c.string("message")
        if message.isEmpty, let text = try? c.string("error") { message = text }
        self.message = message
    }
}

/// One line of a streaming answer.
enum StreamFrame<T: WireDecodable> {
    case result(T)
    case error(ErrorWire)
}

extension StreamFrame: WireDecodable {
    init(fields c: JSONFields) throws {
        if let result: T = try c.object("result") {
            self = .result(result)
        } else if let error: ErrorWire = try c.object("error") {
            self = .error(error)
        } else {
            throw WireDecodingError("a stream frame with neither \"result\" nor \"error\"")
        }
    }
}
