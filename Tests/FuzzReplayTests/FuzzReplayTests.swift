// Replays every committed fuzz input, the corpora (Fuzz/corpus/<target>) and the crash reproducers
// (Fuzz/crashes/<target>), through the same entry points the libFuzzer binaries call
// (scripts/fuzz.sh). Not a fuzz run: each file once, so `swift test` catches a parser that traps,
// or breaks one of the targets' round-trip checks, on an input that once found a bug.

import Foundation
import FuzzTargets
import Testing

/// The fuzz targets, by the names scripts/fuzz.sh and the Fuzz/ folders use.
let fuzzTargets: [String: @Sendable ([UInt8]) -> Void] = [
    "cni-config": CNIConfigFuzz.run,
    "cni-result": CNIResultFuzz.run,
    "subnet-env": SubnetEnvFuzz.run,
    "etcd-response": EtcdResponseFuzz.run,
    "lease-value": LeaseValueFuzz.run,
]

/// The repository's Fuzz folder (this file is Tests/FuzzReplayTests/FuzzReplayTests.swift).
let fuzzFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fuzz")

/// The files of Fuzz/<kind>/<target>, sorted; none when the folder does not exist.
func inputs(_ kind: String, _ target: String) throws -> [URL] {
    let folder = fuzzFolder.appendingPathComponent(kind).appendingPathComponent(target)
    guard FileManager.default.fileExists(atPath: folder.path) else { return [] }
    return try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
        .filter { !$0.lastPathComponent.hasPrefix(".") }
        .sorted { $0.lastPathComponent < $1.lastPathComponent }
}

@Suite struct FuzzReplayTests {
    @Test(arguments: fuzzTargets.keys.sorted())
    func corpusReplaysClean(target: String) throws {
        let files = try inputs("corpus", target)
        // Every target is seeded with real inputs (the seed-* files).
        #expect(files.contains { $0.lastPathComponent.hasPrefix("seed-") }, "no seeds in Fuzz/corpus/\(target)")
        for file in files {
            fuzzTargets[target]!(Array(try Data(contentsOf: file)))
        }
    }

    @Test(arguments: fuzzTargets.keys.sorted())
    func crashesReplayClean(target: String) throws {
        for file in try inputs("crashes", target) {
            fuzzTargets[target]!(Array(try Data(contentsOf: file)))
        }
    }

    /// Every folder under Fuzz/corpus and Fuzz/crashes is a target this suite replays.
    @Test func everyFolderIsATarget() throws {
        for kind in ["corpus", "crashes"] {
            let folder = fuzzFolder.appendingPathComponent(kind)
            // git keeps no empty folder: Fuzz/crashes exists only once a crash was committed.
            guard kind == "corpus" || FileManager.default.fileExists(atPath: folder.path) else { continue }
            let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { !$0.hasPrefix(".") }
            for name in names { #expect(fuzzTargets[name] != nil, "Fuzz/\(kind)/\(name) is not a fuzz target") }
        }
    }
}
