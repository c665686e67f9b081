// The hand-written JSON parser and printer (CNI/JSON.swift) against Foundation's JSONDecoder and
// JSONEncoder, which the CNI module used before: the printer must print the same bytes for every
// value, the parser must read every document the same way, except where RFC 8259 or Go differ from
// JSONDecoder (see `matches`), and must refuse what is not JSON with CNI code 6.

import FoundationEssentials
import Testing

@testable import CNI

// MARK: - The oracle: Foundation, exactly as JSON.swift used it before

/// JSON.encoded as it was: JSONEncoder, and `null` when JSONEncoder refused the value.
private func foundationEncoded(_ value: JSON, pretty: Bool) -> [UInt8] {
    let e = JSONEncoder()
    e.outputFormatting =
        pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    return Array((try? e.encode(value)) ?? Data("null".utf8))
}

/// JSON.parse as it was.
private func foundationDecoded(_ bytes: [UInt8]) throws -> JSON {
    try JSONDecoder().decode(JSON.self, from: Data(bytes))
}

/// Whether `ours` is what JSONDecoder's `oracle` should be. Strings and keys compare byte for byte
/// (String's == would let canonically equivalent spellings pass). One difference is wanted: a
/// number with a fraction or exponent is always `.double` now (as the rule and Go have it), where
/// JSONDecoder made an integral one (1.0, 1e2, -0.0) an Int64.
private func matches(_ ours: JSON, _ oracle: JSON) -> Bool {
    switch (ours, oracle) {
    case (.null, .null): return true
    case (.bool(let a), .bool(let b)): return a == b
    case (.int(let a), .int(let b)): return a == b
    case (.double(let a), .double(let b)): return a == b && a.sign == b.sign
    case (.double(let a), .int(let b)): return a == Double(b)
    case (.string(let a), .string(let b)): return a.utf8.elementsEqual(b.utf8)
    case (.array(let a), .array(let b)): return a.count == b.count && zip(a, b).allSatisfy { matches($0, $1) }
    case (.object(let a), .object(let b)):
        guard a.count == b.count else { return false }
        let byKey = { (o: [String: JSON]) in o.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) } }
        return zip(byKey(a), byKey(b)).allSatisfy {
            $0.key.utf8.elementsEqual($1.key.utf8) && matches($0.value, $1.value)
        }
    default: return false
    }
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// `value` nested in `depth` arrays, or objects with key "k", alternating when `mixed`.
private func nested(_ depth: Int, object: Bool, mixed: Bool = false, _ value: JSON = .int(1)) -> JSON {
    var v = value
    for i in 0..<depth { v = (object != (mixed && i % 2 == 1)) ? .object(["k": v]) : .array([v]) }
    return v
}

// MARK: - Deterministic pseudo-random values and documents

/// SplitMix64: a tiny seeded generator, so every run checks the same values.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random JSON values leaning on the printer's and parser's corners: every control character,
/// quotes, backslashes, slashes, non-ASCII up to U+10FFFF, Int64's ends, doubles from random bit
/// patterns and from the ranges where Swift switches to exponent notation, keys whose byte order
/// differs from case-insensitive or numeric order.
private struct ValueGenerator {
    var rng: SplitMix64
    /// Whether NaN and infinities may appear (they print as `null`; they cannot be parsed back).
    var nonFinite: Bool

    mutating func pick<T>(_ choices: [T]) -> T { choices[Int.random(in: 0..<choices.count, using: &rng)] }
    mutating func below(_ n: Int) -> Int { Int.random(in: 0..<n, using: &rng) }

    mutating func value(depth: Int = 0) -> JSON {
        switch below(depth >= 4 ? 6 : 9) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &rng))
        case 2: return .int(int())
        case 3: return .double(double())
        case 4, 5: return .string(string())
        case 6: return .array((0..<below(5)).map { _ in value(depth: depth + 1) })
        default:
            var o: [String: JSON] = [:]
            for _ in 0..<below(6) { o[key()] = value(depth: depth + 1) }
            return .object(o)
        }
    }

    mutating func int() -> Int64 {
        switch below(4) {
        case 0: return Int64.random(in: .min ... .max, using: &rng)
        case 1: return Int64.random(in: -1000...1000, using: &rng)
        case 2: return pick([.min, .max, .min + 1, .max - 1, 0, -1, 1, 9_007_199_254_740_993])
        default: return Int64.random(in: -1000...1000, using: &rng) * pick([10, 1000, 1_000_000, 1_000_000_000_000])
        }
    }

    mutating func double() -> Double {
        switch below(nonFinite ? 7 : 6) {
        case 0, 1:
            while true {
                let d = Double(bitPattern: rng.next())
                if d.isFinite { return d }
            }
        case 2:
            return Double(Int.random(in: -1_000_000...1_000_000, using: &rng)) / pick([1, 10, 100, 1000, 1e7, 1e-5])
        case 3: return Double(Int64.random(in: .min ... .max, using: &rng)) * pick([1, 1e-20, 1e20])
        case 4:
            // Around the switches between plain and exponent notation.
            let scale = pick([1e-5, 1e-4, 1e-3, 1e15, 1e16, 1e17, 9_007_199_254_740_992])
            return scale * Double(Int.random(in: 1...99, using: &rng)) / 10
        case 5:
            return pick([
                0.0, -0.0, 1.5, 1e20, 1e-7, 0.1, 100.0, 1e16, 1e15, 123_456.789, -2.5e-5,
                .leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
            ])
        default: return pick([.nan, .infinity, -.infinity, -.nan, .signalingNaN])
        }
    }

    mutating func scalar() -> Unicode.Scalar {
        let v: UInt32 =
            switch below(8) {
            case 0, 1, 2: UInt32.random(in: 0x20...0x7E, using: &rng)
            case 3: pick([0x22, 0x5C, 0x2F, 0x7F, 0x08, 0x0C, 0x0A, 0x0D, 0x09])
            case 4: UInt32.random(in: 0x00...0x1F, using: &rng)
            case 5: UInt32.random(in: 0x80...0x7FF, using: &rng)
            case 6:
                pick([
                    UInt32.random(in: 0x800...0xD7FF, using: &rng), UInt32.random(in: 0xE000...0xFFFF, using: &rng),
                    0x2028, 0x2029, 0xFEFF, 0x0301, 0xFFFD, 0xFFFF, 0xE000,
                ])
            default: pick([UInt32.random(in: 0x10000...0x10FFFF, using: &rng), 0x1F600, 0x10FFFF, 0x10000])
            }
        return Unicode.Scalar(v)!
    }

    mutating func string() -> String {
        var s = String.UnicodeScalarView()
        for _ in 0..<below(12) { s.append(scalar()) }
        return String(s)
    }

    mutating func key() -> String {
        switch below(4) {
        case 0: return string()
        case 1:
            return pick([
                "", "a", "A", "b", "B", "a1", "a10", "a2", "_", "~", "é", "e\u{301}", "Z", "z", "aa", "a a",
                "cniVersion",
            ])
        default:
            var s = ""
            for _ in 0..<below(6) {
                s.unicodeScalars.append(Unicode.Scalar(UInt8.random(in: 0x21...0x7E, using: &rng)))
            }
            return s
        }
    }
}

/// Writes a value as a JSON document the many ways JSON allows: any whitespace between tokens,
/// any character escaped (short escapes, \u with either case of hex digits, surrogate pairs), and
/// integers also as 5.0, 5e0, 5E+00.
private struct DocumentWriter {
    var rng: SplitMix64
    var out: [UInt8] = []

    mutating func pick<T>(_ choices: [T]) -> T { choices[Int.random(in: 0..<choices.count, using: &rng)] }
    mutating func emit(_ s: String) { out.append(contentsOf: s.utf8) }
    mutating func space() { emit(pick(["", "", "", " ", "\n", "\t", "\r\n  ", "  "])) }

    mutating func write(_ value: JSON) {
        space()
        switch value {
        case .null: emit("null")
        case .bool(let b): emit(b ? "true" : "false")
        case .int(let i): emit(pick(["\(i)", "\(i)", "\(i).0", "\(i)e0", "\(i)E+00", "\(i).000e-0"]))
        case .double(let d):
            // Swift's description is valid JSON for a finite double and reads back exactly.
            let s = d.description
            emit(pick([s, s.uppercased(), s.contains("e") ? s : s + "0"]))
        case .string(let s): writeString(s)
        case .array(let a):
            emit("[")
            for (i, element) in a.enumerated() {
                if i > 0 { space(); emit(",") }
                write(element)
            }
            space()
            emit("]")
        case .object(let o):
            emit("{")
            // Dictionary order changes from run to run (seeded hashing): shuffle a sorted copy.
            var members = o.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            members.shuffle(using: &rng)
            for (i, (key, member)) in members.enumerated() {
                if i > 0 { space(); emit(",") }
                space()
                writeString(key)
                space()
                emit(":")
                write(member)
            }
            space()
            emit("}")
        }
        space()
    }

    mutating func writeString(_ s: String) {
        emit("\"")
        for scalar in s.unicodeScalars {
            let v = scalar.value
            let mustEscape = v < 0x20 || v == 0x22 || v == 0x5C
            let style = Int.random(in: 0..<4, using: &rng)
            let short: String? =
                switch v {
                case 0x22: "\\\""
                case 0x5C: "\\\\"
                case 0x2F: "\\/"
                case 0x08: "\\b"
                case 0x0C: "\\f"
                case 0x0A: "\\n"
                case 0x0D: "\\r"
                case 0x09: "\\t"
                default: nil
                }
            if !mustEscape && style > 0 {
                emit(String(scalar))
            } else if let short, style < 2 {
                emit(short)
            } else if v > 0xFFFF {
                let u = v - 0x10000
                writeEscape(0xD800 + u >> 10)
                writeEscape(0xDC00 + u & 0x3FF)
            } else {
                writeEscape(v)
            }
        }
        emit("\"")
    }

    mutating func writeEscape(_ unit: UInt32) {
        var hex = String(unit, radix: 16, uppercase: Bool.random(using: &rng))
        while hex.count < 4 { hex = "0" + hex }
        emit("\\u" + hex)
    }
}

private func hasNegativeZero(_ v: JSON) -> Bool {
    switch v {
    case .double(let d): d == 0 && d.sign == .minus
    case .array(let a): a.contains(where: hasNegativeZero)
    case .object(let o): o.values.contains(where: hasNegativeZero)
    default: false
    }
}

// MARK: - Tests

@Suite struct JSONCodecTests {
    // MARK: Printer

    /// Hand-written values whose printing JSONEncoder has opinions about.
    static let trickyValues: [JSON] = [
        .null, .bool(true), .bool(false), .int(0), .int(-1), .int(.max), .int(.min),
        .double(1.5), .double(1e20), .double(1e-7), .double(0.1), .double(-0.0), .double(0.0), .double(100.0),
        .double(1e16), .double(1e15), .double(1.2345678901234568e17), .double(.leastNonzeroMagnitude),
        .double(.greatestFiniteMagnitude), .double(0.0001), .double(0.00001), .double(-1.25e-10),
        .double(.nan), .double(.infinity), .double(-.infinity), .array([.double(.nan)]),
        .object(["a": .double(.infinity)]),
        .string(""), .string("q\"b\\s/\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f}\u{2028}\u{2029}é😀\u{b}\u{feff}"),
        .string("http://example.com/a/b"), .string("e\u{301}"), .string("\u{10FFFF}\u{FFFF}"),
        .array([]), .object([:]), .array([.array([]), .object([:])]),
        .object(["a": .array([]), "b": .object([:]), "c": .array([.int(1), .object(["x": .null])])]),
        .object([
            "b": .null, "a": .null, "B": .null, "é": .null, "z": .null, "a1": .null, "a10": .null, "a2": .null,
            "": .null, "~": .null, "_": .null, "\u{1}": .null, "😀": .null, "\u{FFFF}": .null,
        ]),
        .object([
            "cniVersion": .string("1.0.0"), "name": .string("podnet"),
            "plugins": .array([
                .object([
                    "type": .string("bridge"), "mtu": .int(1450),
                    "ipam": .object([
                        "type": .string("host-local"),
                        "ranges": .array([.array([.object(["subnet": .string("10.88.0.0/16")])])]),
                    ]),
                ])
            ]),
        ]),
        nested(511, object: false), nested(512, object: false), nested(511, object: true), nested(512, object: true),
        nested(511, object: false, mixed: true), nested(512, object: true, mixed: true), nested(600, object: false),
        nested(510, object: false, .array([])), nested(511, object: false, .array([])),
    ]

    @Test(arguments: trickyValues.indices)
    func printsTrickyValuesLikeJSONEncoder(index: Int) {
        let v = Self.trickyValues[index]
        #expect(v.encoded() == foundationEncoded(v, pretty: false))
        #expect(v.encoded(pretty: true) == foundationEncoded(v, pretty: true))
    }

    @Test func printsNumbersAsJSONEncoderDid() {
        let expected: [(Double, String)] = [
            (1.5, "1.5"), (1e20, "1e+20"), (1e-7, "1e-07"), (0.1, "0.1"), (-0.0, "-0"),
            (100.0, "100"), (1e16, "1e+16"), (.leastNonzeroMagnitude, "5e-324"),
        ]
        for (d, s) in expected { #expect(JSON.double(d).text == s) }
        #expect(JSON.int(.min).text == "-9223372036854775808")
        #expect(JSON.double(.nan).text == "null")
        #expect(JSON.array([.int(1), .double(.infinity)]).encoded(pretty: true) == bytes("null"))
    }

    @Test func prettyLayout() {
        let v: JSON = .object(["b": .array([.int(1), .object([:])]), "a": .array([]), "c": .string("/")])
        #expect(
            String(decoding: v.encoded(pretty: true), as: UTF8.self) == """
                {
                  "a" : [

                  ],
                  "b" : [
                    1,
                    {

                    }
                  ],
                  "c" : "/"
                }
                """)
        #expect(v.text == #"{"a":[],"b":[1,{}],"c":"/"}"#)
    }

    @Test func printsRandomValuesLikeJSONEncoder() {
        var gen = ValueGenerator(rng: SplitMix64(state: 0x0DDB_A11C_AFE0_0001), nonFinite: true)
        var compared = 0
        for _ in 0..<3000 {
            let v = gen.value()
            let compact = v.encoded(), pretty = v.encoded(pretty: true)
            #expect(compact == foundationEncoded(v, pretty: false), "\(String(decoding: compact, as: UTF8.self))")
            #expect(pretty == foundationEncoded(v, pretty: true), "\(String(decoding: pretty, as: UTF8.self))")
            compared += 1
        }
        #expect(compared == 3000)
    }

    // MARK: Parser

    /// Hand-written documents, valid JSON, that both parsers must read alike.
    static let trickyDocuments: [String] = [
        "null", "true", "false", "0", "-0", "1", "-1", "1.0", "-0.0", "1e2", "1E2", "1e+2", "1e-2", "0.1e1", "1.5e3",
        "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
        "12345678901234567890", "1e19", "1e-400", "4.9e-324", "1.7976931348623157e308", "123.456",
        "0.30000000000000004",
        "2.2250738585072011e-308", "9007199254740993", "9007199254740993.0",
        "1.00000000000000011102230246251565404236316680908203125",
        #""""#, #""\"\\\/\b\f\n\r\t""#, #""\u0000\u001f\u007F\u00e9\u00E9\u2028\uFEFF\uffff""#,
        #""\ud83d\ude00\uD83D\uDE00""#,
        #""\udbff\udfff""#, "\"é😀\u{7f}\"", #""a\/b""#, "\"\u{feff}\"",
        "[]", "{}", " [ ] ", "\t\n\r {\t\n\r}\t\n\r ", "[1,2,3]", "[ 1 , [ 2 , [ 3 ] ] ]",
        "[null,true,false,\"\",0,[],{}]",
        #"{"a":1,"b":[1,2,{"c":null}],"d":{"e":"f"}}"#, #"{"":0," ":1,"\u0000":2}"#, #"{"a":{"a":{"a":{}}}}"#,
        #"{"cniVersion":"1.0.0","name":"dbnet","type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.1.0.0/16","gateway":"10.1.0.1"},"dns":{"nameservers":["10.1.0.1"]}}"#,
        "\u{feff}{\"a\":1}", "\u{feff}1", "\u{feff} [ ] ",
        String(repeating: "[", count: 512) + String(repeating: "]", count: 512),
        String(repeating: "{\"k\":", count: 512) + "1" + String(repeating: "}", count: 512),
    ]

    @Test(arguments: trickyDocuments)
    func parsesTrickyDocumentsLikeJSONDecoder(document: String) throws {
        let ours = try JSON.parse(bytes(document))
        let oracle = try foundationDecoded(bytes(document))
        #expect(matches(ours, oracle), "ours \(ours.text), JSONDecoder \(oracle.text)")
    }

    @Test func numberKinds() throws {
        #expect(try JSON.parse(bytes("-0")) == .int(0))
        #expect(try JSON.parse(bytes("1.0")) == .double(1))
        #expect(try JSON.parse(bytes("1e2")) == .double(100))
        #expect(try JSON.parse(bytes("-9223372036854775808")) == .int(.min))
        #expect(try JSON.parse(bytes("9223372036854775807")) == .int(.max))
        #expect(try JSON.parse(bytes("9223372036854775808")) == .double(9_223_372_036_854_775_808.0))
        #expect(try JSON.parse(bytes("-9223372036854775809")) == .double(-9_223_372_036_854_775_808.0))
        #expect(try JSON.parse(bytes("1e-400")) == .double(0))
        #expect(try JSON.parse(bytes("0.1")) == .double(0.1))
        // Integral doubles still read as integers where a config wants one.
        #expect(Int(json: try JSON.parse(bytes("1500.0"))) == 1500)
    }

    @Test func repeatedKeyLastWins() throws {
        // As Go's encoding/json; JSONDecoder kept the first.
        #expect(try JSON.parse(bytes(#"{"a":1,"b":0,"a":2}"#)) == .object(["a": .int(2), "b": .int(0)]))
        #expect(try JSON.parse(bytes(#"{"a":{"x":1},"a":[]}"#)) == .object(["a": .array([])]))
    }

    @Test func byteOrderMarkOnlyAtTheStart() throws {
        #expect(try JSON.parse(bytes("\u{feff}{\"a\":\"\u{feff}\"}")) == .object(["a": .string("\u{feff}")]))
        #expect(throws: CNIError.self) { try JSON.parse(bytes(" \u{feff}1")) }
        #expect(throws: CNIError.self) { try JSON.parse(bytes("\u{feff}\u{feff}1")) }
        #expect(throws: CNIError.self) { try JSON.parse(bytes("\u{feff}")) }
    }

    @Test func stringsDecodeExactly() throws {
        #expect(
            try JSON.parse(bytes(#""\ud83d\ude00\u00e9\u0000\/""#)).stringValue.map { Array($0.utf8) }
                == bytes("😀é\u{0}/"))
        // No normalization: the decomposed spelling stays decomposed.
        #expect(try JSON.parse(bytes("\"e\u{301}\"")).stringValue.map { Array($0.utf8) } == [0x65, 0xCC, 0x81])
        #expect(try JSON.parse(bytes(#""e\u0301""#)).stringValue.map { Array($0.utf8) } == [0x65, 0xCC, 0x81])
    }

    @Test func anyCollectionOfBytes() throws {
        let doc = bytes(#"  {"a": [1, "x", {"b": null}]} "#)
        let expected: JSON = .object(["a": .array([.int(1), .string("x"), .object(["b": .null])])])
        #expect(try JSON.parse(doc) == expected)
        #expect(try JSON.parse(doc[2...]) == expected)
        #expect(try JSON.parse(doc.lazy.map { $0 }) == expected)  // not contiguous
        #expect(try JSON.parse(#"{"a": [1, "x", {"b": null}]}"#.utf8) == expected)
    }

    @Test func parsesRandomDocumentsLikeJSONDecoder() throws {
        var gen = ValueGenerator(rng: SplitMix64(state: 0x5EED_0000_0000_0002), nonFinite: false)
        var writer = DocumentWriter(rng: SplitMix64(state: 0x5EED_0000_0000_0003))
        for _ in 0..<3000 {
            let v = gen.value()
            writer.out.removeAll()
            writer.write(v)
            let doc = writer.out
            let text = String(decoding: doc, as: UTF8.self)
            let ours = try JSON.parse(doc)
            let oracle = try foundationDecoded(doc)
            #expect(matches(ours, oracle), "\(text)")
            #expect(matches(ours, v), "\(text)")
        }
    }

    @Test func randomValuesRoundTrip() throws {
        var gen = ValueGenerator(rng: SplitMix64(state: 0x5EED_0000_0000_0004), nonFinite: false)
        for _ in 0..<3000 {
            let v = gen.value()
            let compact = v.encoded(), pretty = v.encoded(pretty: true)
            if compact == bytes("null") && v != .null { continue }  // nested too deep to print
            // Read back, an integral double is an integer (it printed as one): `matches` with the
            // roles swapped allows exactly that.
            let back = try JSON.parse(compact)
            #expect(matches(v, back), "\(v.text)")
            #expect(matches(v, try JSON.parse(pretty)), "\(v.text)")
            // Printing what was read prints the same, except -0.0, which prints as "-0" and reads
            // back as the integer 0.
            #expect(back.encoded() == compact || hasNegativeZero(v), "\(v.text)")
        }
    }

    /// Every example config in netconf/: JSONDecoder reads it the same, the printer prints it as
    /// JSONEncoder did, and it survives printing and reading back.
    @Test func netconfFilesRoundTrip() throws {
        let root = String(
            #filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/"))
        let dir = root + "/netconf"
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
            .filter { $0.hasSuffix(".conflist") || $0.hasSuffix(".json") }.sorted()
        #expect(names.count >= 6)
        for name in names {
            let data = try #require(FileManager.default.contents(atPath: dir + "/" + name), "\(name)")
            let ours = try JSON.parse(Array(data))
            #expect(ours.objectValue != nil, "\(name)")
            #expect(matches(ours, try foundationDecoded(Array(data))), "\(name)")
            for pretty in [false, true] {
                let printed = ours.encoded(pretty: pretty)
                #expect(printed == foundationEncoded(ours, pretty: pretty), "\(name)")
                #expect(try JSON.parse(printed) == ours, "\(name)")
                #expect(try JSON.parse(printed).encoded(pretty: pretty) == printed, "\(name)")
            }
        }
    }

    // MARK: Rejections

    struct Rejection: Sendable, CustomTestStringConvertible {
        let name: String
        let bytes: [UInt8]
        /// The byte offset the error must name, where it is worth pinning down.
        var offset: Int? = nil
        var testDescription: String { name }
    }

    static let rejections: [Rejection] = [
        .init(name: "empty", bytes: []),
        .init(name: "whitespace only", bytes: bytes(" \n\t\r"), offset: 4),
        .init(name: "plus sign", bytes: bytes("+1"), offset: 0),
        .init(name: "NaN", bytes: bytes("NaN"), offset: 0),
        .init(name: "Infinity", bytes: bytes("Infinity")),
        .init(name: "-Infinity", bytes: bytes("-Infinity"), offset: 1),
        .init(name: "leading dot", bytes: bytes(".5"), offset: 0),
        .init(name: "trailing dot", bytes: bytes("1."), offset: 2),
        .init(name: "dot before exponent", bytes: bytes("1.e5"), offset: 2),
        .init(name: "lone minus", bytes: bytes("-"), offset: 1),
        .init(name: "minus without digit", bytes: bytes("[-a]"), offset: 2),
        .init(name: "empty exponent", bytes: bytes("1e"), offset: 2),
        .init(name: "signed empty exponent", bytes: bytes("1e+"), offset: 3),
        .init(name: "leading zero", bytes: bytes("01"), offset: 0),
        .init(name: "negative leading zero", bytes: bytes("[-012]"), offset: 1),
        .init(name: "double zero", bytes: bytes("00")),
        .init(name: "hex number", bytes: bytes("0x10"), offset: 1),
        .init(name: "number too large", bytes: bytes("1e400"), offset: 0),
        .init(name: "negative number too large", bytes: bytes("[-1e400]"), offset: 1),
        .init(name: "trailing comma in array", bytes: bytes("[1,]"), offset: 3),
        .init(name: "trailing comma in object", bytes: bytes(#"{"a":1,}"#), offset: 7),
        .init(name: "leading comma", bytes: bytes("[,1]"), offset: 1),
        .init(name: "missing comma", bytes: bytes("[1 2]"), offset: 3),
        .init(name: "missing colon", bytes: bytes(#"{"a" 1}"#), offset: 5),
        .init(name: "unquoted key", bytes: bytes("{a:1}"), offset: 1),
        .init(name: "single quotes", bytes: bytes("['a']"), offset: 1),
        .init(name: "non-string key", bytes: bytes("{1:1}"), offset: 1),
        .init(name: "missing value", bytes: bytes(#"{"a":}"#), offset: 5),
        .init(name: "unclosed array", bytes: bytes("[1"), offset: 2),
        .init(name: "unclosed object", bytes: bytes(#"{"a":1"#), offset: 6),
        .init(name: "open bracket only", bytes: bytes("["), offset: 1),
        .init(name: "mismatched brackets", bytes: bytes("[}"), offset: 1),
        .init(name: "extra close", bytes: bytes("{}}"), offset: 2),
        .init(name: "two values", bytes: bytes("1 2"), offset: 2),
        .init(name: "trailing garbage", bytes: bytes(#"{"a":1} x"#), offset: 8),
        .init(name: "trailing NUL", bytes: [0x31, 0x00], offset: 1),
        .init(name: "UTF-16LE", bytes: [0x7B, 0x00, 0x7D, 0x00], offset: 1),
        .init(name: "UTF-16 BOM", bytes: [0xFE, 0xFF, 0x00, 0x31], offset: 0),
        .init(name: "truncated literal", bytes: bytes("tru"), offset: 0),
        .init(name: "misspelled literal", bytes: bytes("[nul]"), offset: 1),
        .init(name: "capitalised literal", bytes: bytes("True"), offset: 0),
        .init(name: "literal with suffix", bytes: bytes("nullx"), offset: 4),
        .init(name: "vertical tab as whitespace", bytes: bytes("\u{b}1"), offset: 0),
        .init(name: "no-break space as whitespace", bytes: bytes("\u{a0}1"), offset: 0),
        .init(name: "BOM after whitespace", bytes: bytes(" \u{feff}1"), offset: 1),
        .init(name: "unterminated string", bytes: bytes(#"["abc"#), offset: 1),
        .init(name: "unterminated escape", bytes: bytes(#""\"#)),
        .init(name: "raw control character", bytes: bytes("\"a\u{1}b\""), offset: 2),
        .init(name: "raw tab in string", bytes: bytes("\"a\tb\""), offset: 2),
        .init(name: "raw newline in string", bytes: bytes("\"a\nb\""), offset: 2),
        .init(name: "raw NUL in string", bytes: [0x22, 0x00, 0x22], offset: 1),
        .init(name: "unknown escape", bytes: bytes(#""\x""#), offset: 1),
        .init(name: "escaped single quote", bytes: bytes(#""\'""#), offset: 1),
        .init(name: "capital U escape", bytes: bytes(#""\U0041""#), offset: 1),
        .init(name: "short \\u escape", bytes: bytes(#""\u12""#), offset: 1),
        .init(name: "non-hex \\u escape", bytes: bytes(#""ab\u12g4""#), offset: 3),
        .init(name: "\\u escape at the end", bytes: bytes(#""\u00"#), offset: 1),
        .init(name: "lone high surrogate", bytes: bytes(#""\ud800""#), offset: 1),
        .init(name: "lone low surrogate", bytes: bytes(#""x\udc00""#), offset: 2),
        .init(name: "high surrogate then character", bytes: bytes(#""\ud83dx""#), offset: 1),
        .init(name: "high surrogate then non-surrogate escape", bytes: bytes(#""\ud83d\u0041""#), offset: 1),
        .init(name: "two high surrogates", bytes: bytes(#""\ud83d\ud83d""#), offset: 1),
        .init(name: "surrogates swapped", bytes: bytes(#""\ude00\ud83d""#), offset: 1),
        .init(name: "high surrogate then short escape", bytes: bytes(#""\ud83d\n""#), offset: 1),
        .init(name: "invalid UTF-8 byte", bytes: [0x22, 0xFF, 0x22], offset: 1),
        .init(name: "continuation byte alone", bytes: [0x22, 0x61, 0x80, 0x22], offset: 2),
        .init(name: "truncated 2-byte sequence", bytes: [0x22, 0xC3, 0x22], offset: 1),
        .init(name: "truncated at the end", bytes: [0x22, 0xE2, 0x82], offset: 1),
        .init(name: "overlong 2-byte", bytes: [0x22, 0xC0, 0xAF, 0x22], offset: 1),
        .init(name: "overlong 3-byte", bytes: [0x22, 0xE0, 0x80, 0xAF, 0x22], offset: 1),
        .init(name: "overlong 4-byte", bytes: [0x22, 0xF0, 0x80, 0x80, 0xAF, 0x22], offset: 1),
        .init(name: "UTF-8 surrogate", bytes: [0x22, 0xED, 0xA0, 0x80, 0x22], offset: 1),
        .init(name: "above U+10FFFF", bytes: [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], offset: 1),
        .init(name: "5-byte lead", bytes: [0x22, 0xF8, 0x88, 0x80, 0x80, 0x80, 0x22], offset: 1),
        .init(name: "bad third byte", bytes: [0x22, 0xE2, 0x82, 0x41, 0x22], offset: 1),
        .init(name: "invalid UTF-8 in a key", bytes: [0x7B, 0x22, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D], offset: 2),
        .init(name: "non-ASCII outside a string", bytes: bytes("é"), offset: 0),
        .init(
            name: "513 nested arrays",
            bytes: bytes(String(repeating: "[", count: 513) + String(repeating: "]", count: 513)), offset: 512),
        .init(
            name: "513 nested objects",
            bytes: bytes(String(repeating: #"{"k":"#, count: 513) + "1" + String(repeating: "}", count: 513)),
            offset: 512 * 5),
        .init(name: "100000 open brackets", bytes: Array(repeating: UInt8(ascii: "["), count: 100_000), offset: 512),
    ]

    @Test(arguments: rejections)
    func rejects(_ r: Rejection) {
        do throws(CNIError) {
            let v = try JSON.parse(r.bytes)
            Issue.record("accepted as \(v.text)")
        } catch {
            #expect(error.code == 6)
            #expect(error.msg.hasPrefix("error parsing JSON: "), "\(error.msg)")
            if let offset = r.offset {
                #expect(error.msg.hasSuffix(" at offset \(offset)"), "\(error.msg)")
            } else if !r.bytes.isEmpty {
                #expect(error.msg.contains(" at offset "), "\(error.msg)")
            }
        }
    }

    @Test func errorMessages() {
        func message(_ s: String) -> String {
            do throws(CNIError) { _ = try JSON.parse(bytes(s)); return "" } catch { return error.msg }
        }
        #expect(message("") == "error parsing JSON: empty input")
        #expect(message("[1,]") == "error parsing JSON: unexpected ']', expected a value at offset 3")
        #expect(message(#"{"a":01}"#) == "error parsing JSON: invalid number, leading zero at offset 5")
        #expect(message(#""\ud800""#) == #"error parsing JSON: lone surrogate in \u escape at offset 1"#)
        #expect(message("\"a\u{1}\"") == "error parsing JSON: control character byte 0x01 in a string at offset 2")
        #expect(message("{} x") == "error parsing JSON: unexpected 'x' after the JSON value at offset 3")
    }

    /// A config that is not JSON fails the whole invocation with code 6, as before.
    @Test func dispatcherReportsCode6() throws {
        let o = CNIMain.dispatch(FixedPlugin(), env: env("ADD"), stdin: bytes(#"{"cniVersion":"1.0.0","name":"n","#))
        #expect(o.exitCode == 1)
        let error = try #require(try JSON.parse(o.stdout).objectValue)
        #expect(error["code"] == .int(6))
        #expect(error["msg"]?.stringValue?.hasPrefix("error parsing JSON: unexpected end of input") == true)
    }
}
