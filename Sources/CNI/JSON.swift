// The JSON value of a CNI config (module JSONValue), with CNI's error codes: a syntax error is code
// 6, a key of the wrong type code 7 naming the key.

@_exported import JSONValue

extension JSON {
    /// Parses bytes; a syntax error becomes CNI code 6 (failed to decode content) naming the
    /// byte offset.
    public static func parse(_ bytes: some Collection<UInt8>) throws(CNIError) -> JSON {
        do { return try JSON(parsing: bytes) } catch {
            throw CNIError(.decodingFailure, "error parsing JSON: \(error)")
        }
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
    /// The member Go's encoding/json decodes into the struct field `key` (exact key first, else
    /// the one key equal to it ignoring case; see JSONValue's `member(goField:)`), with the path
    /// of the key as written: `path` ("ipam.rangeStart") with its last component replaced by the
    /// matching key. `null` counts as absent, as in Go. Several keys differing only in case, none
    /// exact, are CNI code 7.
    public func member(_ key: String, path: String? = nil) throws(CNIError) -> (path: String, value: JSON)? {
        let path = path ?? key
        let found: (key: String, value: JSON)?
        do { found = try member(goField: key) } catch {
            let parent = path.hasSuffix(key) ? String(path.dropLast(key.count)) : ""
            let place = parent.hasSuffix(".") ? " in \"\(parent.dropLast())\"" : ""
            let keys = error.keys.map { "\"\($0)\"" }.joined(separator: ", ")
            throw CNIError(
                .invalidNetworkConfig,
                "invalid config: keys \(keys)\(place) all match \"\(key)\" ignoring case; keep one of them")
        }
        guard let found, !found.value.isNull else { return nil }
        guard found.key != key, path.hasSuffix(key) else { return (path, found.value) }
        return (String(path.dropLast(key.count)) + found.key, found.value)
    }

    /// Reads an optional key, matched as Go matches it (`member`); `null` counts as absent. A
    /// value of the wrong type is CNI code 7 naming the key as written, under `path` (e.g.
    /// "ipam.rangeStart").
    public func value<T: JSONReadable>(_ key: String, as: T.Type = T.self, path: String? = nil) throws(CNIError) -> T? {
        guard let (path, v) = try member(key, path: path) else { return nil }
        guard let t = T(json: v) else {
            throw CNIError(
                .invalidNetworkConfig, "invalid config: \"\(path)\" must be \(T.jsonTypeName), got \(v.text)")
        }
        return t
    }

    public func object(_ key: String, path: String? = nil) throws(CNIError) -> [String: JSON]? {
        try value(key, as: [String: JSON].self, path: path)
    }
}

extension Dictionary: JSONReadable where Key == String, Value == JSON {
    public init?(json: JSON) { if case .object(let o) = json { self = o } else { return nil } }
    public static var jsonTypeName: String { "an object" }
}
