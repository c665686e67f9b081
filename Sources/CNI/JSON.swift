// The JSON value of a CNI config (module JSONValue), with CNI's error codes: a syntax error is code
// 6, a key of the wrong type code 7 naming the key.

@_exported import JSONValue

extension JSON {
    /// Parses bytes; a syntax error becomes CNI code 6 (failed to decode content) naming the
    /// byte offset.
    public static func parse(_ bytes: some Collection<UInt8>) throws(CNIError) -> JSON {
        do { return try JSON(parsing: bytes) }
        catch { throw CNIError(.decodingFailure, "error parsing JSON: \(error)") }
    }
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
