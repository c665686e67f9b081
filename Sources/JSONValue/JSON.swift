// A JSON value that keeps every key of a document: the CNI plugins pass configs through to
// delegates and report unknown keys with it, podnetd reads and writes flanneld's etcd values.
//
// Parsing and printing are written out here instead of using JSONDecoder/JSONEncoder or
// JSONSerialization: linking FoundationEssentials alone adds ~4 MB of resident memory to every
// plugin process, about what a whole Go reference plugin uses, and Foundation's JSONSerialization
// would pull all of Foundation (and ICU) into podnetd. The printed bytes are exactly what JSONEncoder printed with
// [.sortedKeys, .withoutEscapingSlashes] (+ .prettyPrinted); Tests/CNITests/JSONCodecTests.swift
// checks parser and printer against Foundation's.

public enum JSON: Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])
}

// Codable is the standard library's: modules that use Foundation can still encode and decode JSON.
extension JSON: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSON].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSON].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

extension JSON {
    /// Parses bytes (RFC 8259, UTF-8); a syntax error names the byte offset. A number without
    /// fraction or exponent that fits Int64 is `.int`, every other number `.double`; of repeated
    /// keys the last wins, as in Go; a UTF-8 byte order mark at the start is skipped, as
    /// JSONDecoder did.
    public init(parsing bytes: some Collection<UInt8>) throws(JSONSyntaxError) {
        let parsed =
            bytes.withContiguousStorageIfAvailable { JSONParser.parse($0) }
            ?? Array(bytes).withUnsafeBufferPointer { JSONParser.parse($0) }
        self = try parsed.get()
    }

    /// Serialises with sorted keys (stable output, as Go's map encoding). A value JSON cannot
    /// express (a NaN or infinite double, or containers nested 512 deep) prints as `null`, as with
    /// JSONEncoder, which refused it.
    public func encoded(pretty: Bool = false) -> [UInt8] {
        var writer = JSONWriter(pretty: pretty)
        return writer.write(self, level: 0) ? writer.out : Array("null".utf8)
    }

    public var text: String { String(decoding: encoded(), as: UTF8.self) }

    public subscript(key: String) -> JSON? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var objectValue: [String: JSON]? { if case .object(let o) = self { o } else { nil } }
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var arrayValue: [JSON]? { if case .array(let a) = self { a } else { nil } }
    public var isNull: Bool { self == .null }
}

/// Why bytes are not a JSON document, and where: "unterminated string at offset 12".
public struct JSONSyntaxError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
}

// MARK: - Parsing

/// A recursive-descent parser straight over the input bytes. `pos` is the offset of the byte being
/// looked at; errors name it.
private struct JSONParser {
    /// Arrays and objects nested deeper than this are an error, not a stack overflow. It is
    /// JSONDecoder's limit: no document it read nests too deep here.
    static let maxDepth = 512

    let bytes: UnsafeBufferPointer<UInt8>
    var pos = 0
    var depth = 0
    /// The decoded bytes of a string with escapes; reused from one such string to the next.
    var scratch: [UInt8] = []

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> Swift.Result<JSON, JSONSyntaxError> {
        var parser = JSONParser(bytes)
        do throws(JSONSyntaxError) { return .success(try parser.document()) } catch { return .failure(error) }
    }

    mutating func document() throws(JSONSyntaxError) -> JSON {
        if bytes.isEmpty { throw JSONSyntaxError(description: "empty input") }
        // A UTF-8 byte order mark, only as the very first bytes, is skipped (JSONDecoder did too).
        if bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF { pos = 3 }
        let v = try value()
        skipWhitespace()
        if pos < bytes.count { throw failure("unexpected \(describe(bytes[pos])) after the JSON value") }
        return v
    }

    func failure(_ what: String, at offset: Int? = nil) -> JSONSyntaxError {
        JSONSyntaxError(description: "\(what) at offset \(offset ?? pos)")
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }

    mutating func value() throws(JSONSyntaxError) -> JSON {
        skipWhitespace()
        guard pos < bytes.count else { throw failure("unexpected end of input, expected a value") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        case let c: throw failure("unexpected \(describe(c)), expected a value")
        }
    }

    mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let start = pos
        for i in 0..<word.utf8CodeUnitCount {
            guard pos < bytes.count && bytes[pos] == word.utf8Start[i] else {
                throw failure("invalid literal, expected \(word)", at: start)
            }
            pos += 1
        }
    }

    /// Steps into an array or object; `pos` is at its opening bracket.
    mutating func enter() throws(JSONSyntaxError) {
        depth += 1
        if depth > Self.maxDepth { throw failure("arrays and objects nested more than \(Self.maxDepth) deep") }
        pos += 1
    }

    /// Steps out of an array or object; `pos` is at its closing bracket.
    mutating func leave() {
        depth -= 1
        pos += 1
    }

    mutating func array() throws(JSONSyntaxError) -> JSON {
        try enter()
        var a: [JSON] = []
        skipWhitespace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "]") {
            leave()
            return .array(a)
        }
        while true {
            a.append(try value())
            skipWhitespace()
            guard pos < bytes.count else { throw failure("unexpected end of input in an array") }
            switch bytes[pos] {
            case UInt8(ascii: ","): pos += 1
            case UInt8(ascii: "]"):
                leave()
                return .array(a)
            case let c: throw failure("unexpected \(describe(c)) in an array, expected ',' or ']'")
            }
        }
    }

    mutating func object() throws(JSONSyntaxError) -> JSON {
        try enter()
        var o: [String: JSON] = [:]
        skipWhitespace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "}") {
            leave()
            return .object(o)
        }
        while true {
            skipWhitespace()
            guard pos < bytes.count else { throw failure("unexpected end of input in an object") }
            guard bytes[pos] == UInt8(ascii: "\"") else {
                throw failure("unexpected \(describe(bytes[pos])) in an object, expected a string key")
            }
            let key = try string()
            skipWhitespace()
            guard pos < bytes.count else { throw failure("unexpected end of input in an object") }
            guard bytes[pos] == UInt8(ascii: ":") else {
                throw failure("unexpected \(describe(bytes[pos])) after an object key, expected ':'")
            }
            pos += 1
            o[key] = try value()  // a repeated key: the last value wins
            skipWhitespace()
            guard pos < bytes.count else { throw failure("unexpected end of input in an object") }
            switch bytes[pos] {
            case UInt8(ascii: ","): pos += 1
            case UInt8(ascii: "}"):
                leave()
                return .object(o)
            case let c: throw failure("unexpected \(describe(c)) in an object, expected ',' or '}'")
            }
        }
    }

    func isDigit(at i: Int) -> Bool {
        i < bytes.count && bytes[i] >= UInt8(ascii: "0") && bytes[i] <= UInt8(ascii: "9")
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    mutating func number() throws(JSONSyntaxError) -> JSON {
        let start = pos
        let negative = bytes[pos] == UInt8(ascii: "-")
        if negative { pos += 1 }
        guard isDigit(at: pos) else { throw failure("invalid number, expected a digit") }
        // The integer part, summed up negatively: Int64.min has no positive counterpart.
        var value: Int64 = 0
        var fits = true
        if bytes[pos] == UInt8(ascii: "0") {
            pos += 1
            if isDigit(at: pos) { throw failure("invalid number, leading zero", at: start) }
        } else {
            while isDigit(at: pos) {
                if fits {
                    let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                    let (next, o2) = times10.subtractingReportingOverflow(Int64(bytes[pos] &- UInt8(ascii: "0")))
                    if o1 || o2 { fits = false } else { value = next }
                }
                pos += 1
            }
        }
        var integral = true
        if pos < bytes.count && bytes[pos] == UInt8(ascii: ".") {
            integral = false
            pos += 1
            guard isDigit(at: pos) else { throw failure("invalid number, expected a digit after '.'") }
            while isDigit(at: pos) { pos += 1 }
        }
        if pos < bytes.count && (bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E")) {
            integral = false
            pos += 1
            if pos < bytes.count && (bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-")) { pos += 1 }
            guard isDigit(at: pos) else { throw failure("invalid number, expected a digit in the exponent") }
            while isDigit(at: pos) { pos += 1 }
        }
        if integral && fits {
            if negative { return .int(value) }
            if value != .min { return .int(-value) }
        }
        // The standard library's conversion rounds correctly, and the grammar is checked already.
        // (Up to 15 bytes, the String is stored inline, without allocating.)
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else { throw failure("number out of range", at: start) }
        return .double(d)
    }

    /// Reads a string; `pos` is at its opening quote. Without escapes the String is made straight
    /// from the input bytes; with escapes the decoded bytes collect in `scratch` first.
    mutating func string() throws(JSONSyntaxError) -> String {
        let open = pos
        pos += 1
        var run = pos  // the first byte not yet copied to `scratch`
        var escaped = false
        while true {
            guard pos < bytes.count else { throw failure("unterminated string", at: open) }
            switch bytes[pos] {
            case UInt8(ascii: "\""):
                let plain = UnsafeBufferPointer(rebasing: bytes[run..<pos])
                pos += 1
                if !escaped { return String(decoding: plain, as: UTF8.self) }
                scratch.append(contentsOf: plain)
                return String(decoding: scratch, as: UTF8.self)
            case UInt8(ascii: "\\"):
                if !escaped {
                    scratch.removeAll(keepingCapacity: true)
                    escaped = true
                }
                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run..<pos]))
                try escape()
                run = pos
            case 0x00..<0x20: throw failure("control character \(describe(bytes[pos])) in a string")
            case 0x20..<0x80: pos += 1
            default: try skipUTF8Sequence()
            }
        }
    }

    /// Decodes one escape into `scratch`; `pos` is at the backslash.
    mutating func escape() throws(JSONSyntaxError) {
        let at = pos
        guard pos + 1 < bytes.count else { throw failure("unterminated string") }
        let c = bytes[pos + 1]
        pos += 2
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(c)
        case UInt8(ascii: "b"): scratch.append(0x08)
        case UInt8(ascii: "f"): scratch.append(0x0C)
        case UInt8(ascii: "n"): scratch.append(0x0A)
        case UInt8(ascii: "r"): scratch.append(0x0D)
        case UInt8(ascii: "t"): scratch.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try hex4(escapeAt: at)
            switch scalar {
            case 0xD800...0xDBFF:
                // A high surrogate needs an escaped low surrogate right after it.
                guard pos + 1 < bytes.count && bytes[pos] == UInt8(ascii: "\\") && bytes[pos + 1] == UInt8(ascii: "u")
                else {
                    throw failure("lone surrogate in \\u escape", at: at)
                }
                pos += 2
                let low = try hex4(escapeAt: pos - 2)
                guard low >= 0xDC00 && low <= 0xDFFF else { throw failure("lone surrogate in \\u escape", at: at) }
                scalar = 0x10000 + (scalar - 0xD800) << 10 + (low - 0xDC00)
            case 0xDC00...0xDFFF:
                throw failure("lone surrogate in \\u escape", at: at)
            default:
                break
            }
            appendUTF8(scalar)
        default:
            throw failure("invalid escape: backslash followed by \(describe(c))", at: at)
        }
    }

    /// The four hex digits of the \u escape at `at`; `pos` is at the first digit.
    mutating func hex4(escapeAt at: Int) throws(JSONSyntaxError) -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard pos < bytes.count else { throw failure("incomplete \\u escape", at: at) }
            let c = bytes[pos]
            let digit: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
            default: throw failure("invalid \\u escape", at: at)
            }
            v = v << 4 | UInt32(digit)
            pos += 1
        }
        return v
    }

    /// Appends a Unicode scalar value (not a surrogate) as UTF-8.
    mutating func appendUTF8(_ scalar: UInt32) {
        switch scalar {
        case ..<0x80:
            scratch.append(UInt8(scalar))
        case ..<0x800:
            scratch.append(UInt8(0xC0 | scalar >> 6))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        case ..<0x10000:
            scratch.append(UInt8(0xE0 | scalar >> 12))
            scratch.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        default:
            scratch.append(UInt8(0xF0 | scalar >> 18))
            scratch.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            scratch.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// Steps over the multi-byte UTF-8 sequence at `pos`, checking that it is well-formed
    /// (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
    mutating func skipUTF8Sequence() throws(JSONSyntaxError) {
        // The sequence's length, and the range its second byte must lie in.
        let (length, low, high): (Int, UInt8, UInt8) =
            switch bytes[pos] {
            case 0xC2...0xDF: (2, 0x80, 0xBF)
            case 0xE0: (3, 0xA0, 0xBF)
            case 0xE1...0xEC, 0xEE...0xEF: (3, 0x80, 0xBF)
            case 0xED: (3, 0x80, 0x9F)
            case 0xF0: (4, 0x90, 0xBF)
            case 0xF1...0xF3: (4, 0x80, 0xBF)
            case 0xF4: (4, 0x80, 0x8F)
            default: (0, 0, 0)
            }
        guard length > 0 && pos + 1 < bytes.count && bytes[pos + 1] >= low && bytes[pos + 1] <= high else {
            throw failure("invalid UTF-8")
        }
        for i in 2..<length where pos + i >= bytes.count || bytes[pos + i] & 0xC0 != 0x80 {
            throw failure("invalid UTF-8")
        }
        pos += length
    }

    /// A byte for an error message: 'x' when printable ASCII, else its hex value.
    func describe(_ byte: UInt8) -> String {
        if byte > 0x20 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
        let hex = String(byte, radix: 16, uppercase: true)
        return "byte 0x\(byte < 0x10 ? "0" : "")\(hex)"
    }
}

// MARK: - Printing

/// Prints a value as JSONEncoder did with [.sortedKeys, .withoutEscapingSlashes], optionally
/// with .prettyPrinted: keys in the byte order of their UTF-8; only '"', '\' and control characters
/// escaped (\b \f \n \r \t, the others as \u00xx), all else raw UTF-8; a double as Swift describes it
/// minus a trailing ".0". Pretty: two-space indents, `"key" : value`, an empty container as "[\n\n]".
private struct JSONWriter {
    /// JSONEncoder refused arrays and objects nested this deep: the whole value printed as `null`.
    static let maxDepth = 512

    let pretty: Bool
    var out: [UInt8] = []

    init(pretty: Bool) {
        self.pretty = pretty
        out.reserveCapacity(512)
    }

    /// Appends `value`, found inside `level` arrays and objects; false when it cannot be printed.
    mutating func write(_ value: JSON, level: Int) -> Bool {
        switch value {
        case .null: append("null")
        case .bool(let b): append(b ? "true" : "false")
        case .int(let i): writeInt(i)
        case .double(let d):
            guard d.isFinite else { return false }
            var s = d.description
            if s.hasSuffix(".0") { s.removeLast(2) }
            out.append(contentsOf: s.utf8)
        case .string(let s): writeString(s)
        case .array(let a):
            guard level + 1 < Self.maxDepth else { return false }
            open(UInt8(ascii: "["))
            for (i, element) in a.enumerated() {
                separate(first: i == 0, level: level + 1)
                guard write(element, level: level + 1) else { return false }
            }
            close(UInt8(ascii: "]"), level: level)
        case .object(let o):
            guard level + 1 < Self.maxDepth else { return false }
            open(UInt8(ascii: "{"))
            let members = o.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            for (i, (key, member)) in members.enumerated() {
                separate(first: i == 0, level: level + 1)
                writeString(key)
                if pretty { append(" : ") } else { out.append(UInt8(ascii: ":")) }
                guard write(member, level: level + 1) else { return false }
            }
            close(UInt8(ascii: "}"), level: level)
        }
        return true
    }

    mutating func append(_ s: StaticString) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    mutating func open(_ bracket: UInt8) {
        out.append(bracket)
        if pretty { out.append(0x0A) }
    }

    /// What goes before a member: a comma after the first and, when pretty, a line break and indent.
    mutating func separate(first: Bool, level: Int) {
        if !first {
            out.append(UInt8(ascii: ","))
            if pretty { out.append(0x0A) }
        }
        indent(level)
    }

    mutating func close(_ bracket: UInt8, level: Int) {
        if pretty { out.append(0x0A) }
        indent(level)
        out.append(bracket)
    }

    mutating func indent(_ level: Int) {
        guard pretty else { return }
        for _ in 0..<level { append("  ") }
    }

    mutating func writeInt(_ i: Int64) {
        if i < 0 { out.append(UInt8(ascii: "-")) }
        // The digits of the magnitude (UInt64 holds Int64.min's), last first, then turned around.
        var m = i.magnitude
        let first = out.count
        repeat {
            out.append(UInt8(ascii: "0") + UInt8(m % 10))
            m /= 10
        } while m > 0
        out[first...].reverse()
    }

    mutating func writeString(_ s: String) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            var run = 0  // the first byte not yet copied
            for i in utf8.indices {
                let c = utf8[i]
                let escape: UInt8  // the letter after the backslash; 0 for \u00xx
                switch c {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): escape = c
                case 0x08: escape = UInt8(ascii: "b")
                case 0x0C: escape = UInt8(ascii: "f")
                case 0x0A: escape = UInt8(ascii: "n")
                case 0x0D: escape = UInt8(ascii: "r")
                case 0x09: escape = UInt8(ascii: "t")
                case 0x00..<0x20: escape = 0
                default: continue
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<i]))
                out.append(UInt8(ascii: "\\"))
                if escape != 0 {
                    out.append(escape)
                } else {
                    let hex: StaticString = "0123456789abcdef"
                    append("u00")
                    out.append(hex.utf8Start[Int(c >> 4)])
                    out.append(hex.utf8Start[Int(c & 0xF)])
                }
                run = i + 1
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run...]))
        }
        out.append(UInt8(ascii: "\""))
    }
}
