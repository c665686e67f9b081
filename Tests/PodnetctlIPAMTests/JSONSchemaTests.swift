// The JSON `podnetctl ipam --json` prints against its documentation, docs/podnetctl-ipam-json.md:
// every field printed is documented with the type it has, every documented field is printed, and
// the document's example has the same shape.

import JSONValue
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct IPAMJSONSchemaTests {
    /// The field tables of the doc: name -> allowed types ("string", "integer", "array", "null").
    /// A row is "| `name` | type | meaning |" or "| `a`, `b` | type | meaning |".
    func documentedFields() throws -> [String: Set<String>] {
        let root = #filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/")
        let doc = try #require(readText(root + "/docs/podnetctl-ipam-json.md"))
        var fields: [String: Set<String>] = [:]
        for line in doc.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|").map { $0.trimmingPrefix(while: \.isWhitespace) }
            guard cells.count >= 3 else { continue }
            let names = cells[0].split(separator: "`", omittingEmptySubsequences: false).enumerated().filter {
                $0.offset % 2 == 1
            }.map {
                String($0.element)
            }
            let types = Set(cells[1].split(separator: " ").map(String.init).filter { $0 != "or" })
            for name in names { fields[name, default: []].formUnion(types) }
        }
        return fields
    }

    /// Checks every object key of `value` against `fields`, and records the keys seen.
    func check(_ value: JSON, _ fields: [String: Set<String>], seen: inout Set<String>, path: String = "") {
        switch value {
        case .object(let o):
            for (key, v) in o {
                seen.insert(key)
                let allowed = fields[key]
                #expect(allowed != nil, "\(path).\(key) is not documented")
                #expect(allowed?.contains(typeName(v)) ?? true, "\(path).\(key) is \(typeName(v)), not \(allowed!)")
                check(v, fields, seen: &seen, path: path + "." + key)
            }
        case .array(let a):
            for v in a { check(v, fields, seen: &seen, path: path + "[]") }
        default: break
        }
    }

    func typeName(_ v: JSON) -> String {
        switch v {
        case .null: "null"
        case .bool: "boolean"
        case .int: "integer"
        case .double: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    @Test func everyFieldIsDocumentedWithItsType() throws {
        let fields = try documentedFields()
        #expect(fields.count >= 20)
        try withTempDir { tmp in
            try fillStore(tmp)
            writeFile(tmp + "/cbr0/10.244.1.20", goneC)
            mkdir(tmp + "/broken", 0o755)
            mkdir(tmp + "/broken/lock", 0o755)  // a directory where the lock file must be: unreadable store
            writeFile(
                tmp + "/cbr0.conf",
                #"{"name": "cbr0", "type": "bridge", "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}}"#)
            var seen = Set<String>()
            let withLive = try ipam(
                ["--data-dir", tmp, "--config", tmp + "/cbr0.conf", "--live", "-", "--json"], stdin: liveA)
            #expect(withLive.status == 2)  // the broken network
            check(try JSON(parsing: Array(withLive.stdout.utf8)), fields, seen: &seen)
            let without = try ipam(["--data-dir", tmp, "--json"])
            check(try JSON(parsing: Array(without.stdout.utf8)), fields, seen: &seen)
            let missing = try ipam(["--data-dir", tmp + "/missing", "--json"])
            check(try JSON(parsing: Array(missing.stdout.utf8)), fields, seen: &seen)
            #expect(seen == Set(fields.keys))
        }
    }

    @Test func theDocumentsExampleHasTheSameShape() throws {
        let fields = try documentedFields()
        let root = #filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/")
        let doc = try #require(readText(root + "/docs/podnetctl-ipam-json.md"))
        let example = try #require(doc.split(separator: "```json\n", maxSplits: 1).last?.split(separator: "```").first)
        var seen = Set<String>()
        check(try JSON(parsing: Array(example.utf8)), fields, seen: &seen)
        #expect(seen == Set(fields.keys))
    }
}
