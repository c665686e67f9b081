// Finding an object's member the way Go's encoding/json finds the JSON key for a struct field:
// the CNI plugins this project replaces decode every config, runtimeConfig and result into Go
// structs, so `"HostPort"` (containerd 1.6's CRI) fills the field tagged `json:"hostPort"`.
//
// Go, for each key of the object in document order: the field whose name is exactly the key,
// else the field whose name equals the key ignoring case (bytes.EqualFold: ASCII letters, plus
// U+212A KELVIN SIGN for k and U+017F LATIN SMALL LETTER LONG S for s). When several keys match
// one field, each overwrites the previous one, so the last in the document wins.
//
// A `[String: JSON]` does not keep the document's order, so the last key cannot be known here.
// What this does instead: a key spelled exactly like the field wins over keys that differ in
// case (Go's documented preference, and what Go does whenever the exact key comes last); several
// keys that differ only in case, none exact, are ambiguous and reported, never guessed.

extension Dictionary where Key == String, Value == JSON {
    /// The member Go would decode into a struct field named `field`: the exact key, else the one
    /// key equal to `field` ignoring case. Nil when no key matches.
    public func member(goField field: String) throws(AmbiguousKeysError) -> (key: String, value: JSON)? {
        if let v = self[field] { return (field, v) }
        var found: (key: String, value: JSON)?
        var others: [String] = []
        for (k, v) in self where JSON.goFieldNameMatches(key: k, field: field) {
            if found == nil { found = (k, v) } else { others.append(k) }
        }
        guard let found else { return nil }
        if !others.isEmpty {
            throw AmbiguousKeysError(field: field, keys: ([found.key] + others).sorted())
        }
        return found
    }
}

extension JSON {
    /// bytes.EqualFold(key, field) for a field name of ASCII characters (every field name of the
    /// CNI types is): each character of the key equals the field's, or is its other ASCII case, or
    /// is the Kelvin sign for k or the long s for s. A non-ASCII field name matches only exactly.
    public static func goFieldNameMatches(key: String, field: String) -> Bool {
        var keyScalars = key.unicodeScalars.makeIterator()
        for f in field.unicodeScalars {
            guard let k = keyScalars.next() else { return false }
            if k == f { continue }
            guard f.isASCII else { return false }
            let lower = f.value | 0x20  // 'A'...'Z' -> 'a'...'z'
            guard (0x61...0x7A).contains(lower) else { return false }
            switch k.value {
            case lower, lower & ~0x20: continue
            case 0x212A where lower == 0x6B: continue  // KELVIN SIGN folds to k
            case 0x017F where lower == 0x73: continue  // LONG S folds to s
            default: return false
            }
        }
        return keyScalars.next() == nil
    }
}

/// Several keys of one object match the same field only when case is ignored, and none is
/// spelled exactly like it: `{"HostPort": 80, "HOSTPORT": 81}`.
public struct AmbiguousKeysError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The field's own spelling, e.g. "hostPort".
    public var field: String
    /// The keys that match it, sorted.
    public var keys: [String]

    public init(field: String, keys: [String]) {
        self.field = field
        self.keys = keys
    }

    public var description: String {
        "keys \(keys.map { "\"\($0)\"" }.joined(separator: ", ")) all match \"\(field)\" ignoring case"
    }
}
