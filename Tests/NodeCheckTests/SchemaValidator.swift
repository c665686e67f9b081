// A JSON Schema validator for the subset docs/podnetctl.schema.json uses: type (one or a list),
// const, enum, properties, required, additionalProperties (false or a schema), items, oneOf and
// local $ref. A keyword outside the subset is an error, so the schema cannot grow a rule this
// validator silently ignores.

import JSONValue

struct SchemaValidator {
    let root: JSON

    private static let annotations: Set<String> = ["$schema", "$id", "$defs", "title", "description"]
    private static let keywords: Set<String> = [
        "type", "const", "enum", "properties", "required", "additionalProperties", "items", "oneOf", "$ref",
    ]

    /// Every violation of `value` against the root schema, as "path: what"; empty when valid.
    func validate(_ value: JSON) -> [String] { validate(value, against: root, path: "$") }

    /// Every violation of `value` against the schema at `ref` ("#/$defs/report").
    func validate(_ value: JSON, against ref: String) -> [String] {
        guard let schema = resolve(ref) else { return ["unresolved \(ref)"] }
        return validate(value, against: schema, path: "$")
    }

    private func validate(_ value: JSON, against schema: JSON, path: String) -> [String] {
        guard let s = schema.objectValue else { return ["\(path): schema is not an object"] }
        var errors: [String] = []
        for key in s.keys where !Self.keywords.contains(key) && !Self.annotations.contains(key) {
            errors.append("\(path): unsupported schema keyword \(key)")
        }
        if let ref = s["$ref"]?.stringValue {
            guard let target = resolve(ref) else { return ["\(path): unresolved $ref \(ref)"] }
            errors += validate(value, against: target, path: path)
        }
        if let type = s["type"] {
            let names = type.arrayValue?.compactMap(\.stringValue) ?? [type.stringValue ?? ""]
            if !names.contains(where: { Self.matches(value, type: $0) }) {
                errors.append("\(path): \(value.text) is not of type \(names.joined(separator: " or "))")
            }
        }
        if let c = s["const"], c != value { errors.append("\(path): \(value.text) is not \(c.text)") }
        if let e = s["enum"]?.arrayValue, !e.contains(value) {
            errors.append("\(path): \(value.text) is not one of \(JSON.array(e).text)")
        }
        if let options = s["oneOf"]?.arrayValue {
            let passing = options.filter { validate(value, against: $0, path: path).isEmpty }.count
            if passing != 1 { errors.append("\(path): \(passing) of oneOf's \(options.count) schemas match") }
        }
        if let object = value.objectValue {
            let properties = s["properties"]?.objectValue ?? [:]
            for name in s["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where object[name] == nil {
                errors.append("\(path): required key \(name) missing")
            }
            for (name, member) in object.sorted(by: { $0.key < $1.key }) {
                if let p = properties[name] {
                    errors += validate(member, against: p, path: "\(path).\(name)")
                } else if let extra = s["additionalProperties"] {
                    if extra == .bool(false) {
                        errors.append("\(path): key \(name) is not in the schema")
                    } else if extra != .bool(true) {
                        errors += validate(member, against: extra, path: "\(path).\(name)")
                    }
                }
            }
        }
        if let array = value.arrayValue, let items = s["items"] {
            for (i, element) in array.enumerated() {
                errors += validate(element, against: items, path: "\(path)[\(i)]")
            }
        }
        return errors
    }

    private func resolve(_ ref: String) -> JSON? {
        guard ref.hasPrefix("#/") else { return nil }
        var node: JSON? = root
        for part in ref.dropFirst(2).split(separator: "/") { node = node?[String(part)] }
        return node
    }

    private static func matches(_ value: JSON, type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object),
            ("integer", .int), ("number", .int), ("number", .double):
            true
        default: false
        }
    }
}
