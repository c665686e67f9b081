// Fuzz target `cni-result`: a result as a plugin prints it (or as prevResult), read in the layout
// of every spec version and converted to every other, as libcni and chained plugins do.

import CNI

public enum CNIResultFuzz {
    public static func run(_ bytes: [UInt8]) {
        guard let json = try? JSON.parse(bytes) else { return }
        for assumed in SpecVersion.allCases {
            guard let result = try? CNI.Result(json: json, assumedVersion: assumed) else { continue }
            for version in SpecVersion.allCases {
                guard let printed = try? result.json(version: version) else { continue }
                checkReadsBack(printed, version: version)
            }
        }
    }

    /// A result we print is read by the runtime or the next plugin: it must parse again, in its own
    /// version, and print the same text a second time.
    static func checkReadsBack(_ printed: JSON, version: SpecVersion) {
        let text = printed.encoded()
        let show = String(decoding: text, as: UTF8.self)
        guard let json = try? JSON.parse(text) else { fatalError("printed result is not JSON: \(show)") }
        let again: CNI.Result
        do { again = try CNI.Result(json: json, assumedVersion: version) } catch {
            fatalError("result printed as \(version.rawValue) does not read back (\(error)): \(show)")
        }
        guard let reprinted = try? again.json(version: version), reprinted.encoded() == text else {
            fatalError("result printed as \(version.rawValue) changes when read and printed again: \(show)")
        }
    }
}
