// Reading JSON objects the way Go's encoding/json fills a struct, which is how flanneld reads the
// network config and lease values: a key matches a field exactly first, else case-insensitively
// (`"vni"`, `"VNI"` and `"Vni"` all mean VNI); unknown keys are ignored; a known key with a value
// of the wrong type, or a number that does not fit the field, is an error naming the key.

import JSONValue

/// An object's members, looked up as Go's encoding/json matches struct fields.
struct GoObject {
    let members: [String: JSON]
    /// The key path of this object in the document, for messages ("Backend.").
    let path: String

    init?(_ json: JSON, path: String = "") {
        guard let o = json.objectValue else { return nil }
        members = o; self.path = path
    }

    /// The member `name`: the exact key, else the first key (in sorted order, so that the choice
    /// does not depend on hashing) that equals it ignoring case. `null` counts as absent, as Go
    /// leaves a field alone for null.
    subscript(_ name: String) -> JSON? {
        let v: JSON?
        if let exact = members[name] {
            v = exact
        } else {
            let folded = name.lowercased()
            v = members.keys.sorted().first { $0.lowercased() == folded }.flatMap { members[$0] }
        }
        return v?.isNull == true ? nil : v
    }

    func string(_ name: String) throws(ConfigError) -> String? {
        guard let v = self[name] else { return nil }
        guard let s = v.stringValue else { throw ConfigError("\(path)\(name) must be a string, not \(v.text)") }
        return s
    }

    func bool(_ name: String) throws(ConfigError) -> Bool? {
        guard let v = self[name] else { return nil }
        guard let b = v.boolValue else { throw ConfigError("\(path)\(name) must be true or false, not \(v.text)") }
        return b
    }

    func object(_ name: String) throws(ConfigError) -> GoObject? {
        guard let v = self[name] else { return nil }
        guard let o = GoObject(v, path: path + name + ".") else {
            throw ConfigError("\(path)\(name) must be an object, not \(v.text)")
        }
        return o
    }

    /// An array of objects, each read with the same rules (its path "Name[i]."); nil when absent.
    func objects(_ name: String) throws(ConfigError) -> [GoObject]? {
        guard let v = self[name] else { return nil }
        guard let items = v.arrayValue else { throw ConfigError("\(path)\(name) must be an array, not \(v.text)") }
        var out: [GoObject] = []
        for (i, item) in items.enumerated() {
            guard let o = GoObject(item, path: "\(path)\(name)[\(i)].") else {
                throw ConfigError("\(path)\(name)[\(i)] must be an object, not \(item.text)")
            }
            out.append(o)
        }
        return out
    }

    /// A whole number in `range` (`0` too when `zeroMeansDefault`); nil when absent.
    func integer(_ name: String, in range: ClosedRange<Int64>, zeroMeansDefault: Bool = false) throws(ConfigError)
        -> Int64?
    {
        guard let v = self[name] else { return nil }
        let allowed = (zeroMeansDefault ? "0 (the default) or " : "") + "\(range.lowerBound)...\(range.upperBound)"
        guard let n = v.integerValue else {
            throw ConfigError("\(path)\(name) must be a whole number in \(allowed), not \(v.text)")
        }
        if zeroMeansDefault && n == 0 { return 0 }
        guard range.contains(n) else {
            throw ConfigError("\(path)\(name) \(n) is out of range: allowed are \(allowed)")
        }
        return n
    }
}

/// A network config (or a part of it) that cannot be used, with a sentence saying why.
public struct ConfigError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
