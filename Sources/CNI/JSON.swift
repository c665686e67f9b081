// A JSON value that keeps every key of a CNI config, so plugins can pass configs through to
// delegates, report unknown keys, and read typed values with errors that name the key.

import FoundationEssentials

public enum JSON: Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])
}

extension JSON: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSON].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSON].self)) }
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
    /// Parses bytes; a syntax error becomes CNI code 6 (failed to decode content).
    public static func parse(_ bytes: some Collection<UInt8>) throws(CNIError) -> JSON {
        do { return try JSONDecoder().decode(JSON.self, from: Data(bytes)) }
        catch { throw CNIError(.decodingFailure, "error parsing JSON: \(describe(error))") }
    }

    /// Serialises with sorted keys (stable output, as Go's map encoding).
    public func encoded(pretty: Bool = false) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? e.encode(self)) ?? Data("null".utf8))
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

private func describe(_ error: any Error) -> String {
    if let e = error as? DecodingError {
        switch e {
        case .dataCorrupted(let c): return c.underlyingError.map { "\($0)" } ?? c.debugDescription
        default: return "\(e)"
        }
    }
    return "\(error)"
}

// MARK: - Typed reads with errors that name the key

/// A type that can be read out of a JSON config value.
public protocol JSONReadable {
    init?(json: JSON)
    static var jsonTypeName: String { get }
}

extension Bool: JSONReadable {
    public init?(json: JSON) { if case .bool(let b) = json { self = b } else { return nil } }
    public static var jsonTypeName: String { "a boolean" }
}
extension Int: JSONReadable {
    public init?(json: JSON) {
        switch json {
        case .int(let i): self = Int(i)
        case .double(let d) where d == d.rounded() && abs(d) < 1e15: self = Int(d)
        default: return nil
        }
    }
    public static var jsonTypeName: String { "an integer" }
}
extension String: JSONReadable {
    public init?(json: JSON) { if case .string(let s) = json { self = s } else { return nil } }
    public static var jsonTypeName: String { "a string" }
}
extension JSON: JSONReadable {
    public init?(json: JSON) { self = json }
    public static var jsonTypeName: String { "a JSON value" }
}
extension Array: JSONReadable where Element: JSONReadable {
    public init?(json: JSON) {
        guard case .array(let a) = json else { return nil }
        var out: [Element] = []
        for v in a { guard let e = Element(json: v) else { return nil }; out.append(e) }
        self = out
    }
    public static var jsonTypeName: String { "a list of \(Element.jsonTypeName)" }
}

extension Dictionary where Key == String, Value == JSON {
    /// Reads an optional key; `null` counts as absent. A value of the wrong type is CNI code 7
    /// naming `path` (e.g. "ipam.rangeStart").
    public func value<T: JSONReadable>(_ key: String, as: T.Type = T.self, path: String? = nil) throws(CNIError) -> T? {
        guard let v = self[key], !v.isNull else { return nil }
        guard let t = T(json: v) else {
            throw CNIError(.invalidNetworkConfig, "invalid config: \"\(path ?? key)\" must be \(T.jsonTypeName), got \(v.text)")
        }
        return t
    }

    public func object(_ key: String, path: String? = nil) throws(CNIError) -> [String: JSON]? {
        guard let v = self[key], !v.isNull else { return nil }
        guard let o = v.objectValue else {
            throw CNIError(.invalidNetworkConfig, "invalid config: \"\(path ?? key)\" must be an object, got \(v.text)")
        }
        return o
    }
}
