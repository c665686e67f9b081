// The output: tables against golden files (at most 80 columns, no escapes without colour), JSON
// against docs/podnetctl.schema.json and back through Decodable, colour only on a terminal and
// never with NO_COLOR. Set PODNET_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate
// change, and review their diff.

import Addressing
import Foundation
import JSONValue
import Netlink
import NodeCheck
import Overlay
import TestSupport
import Testing

@Suite struct OutputTests {
    /// A node with a bit of everything: a healthy peer, a deleted route, a wrong-MAC neighbour, a
    /// stale route, a rejected lease, a reservation, a daemon that answered.
    func mixedReport() throws -> NodeReport {
        var node = try TestNode(extra: [
            lease("10.244.4.0/24", "192.168.50.14", mac: "02:00:00:00:04:01", ttl: nil),
            lease("10.244.5.0/24", "127.0.0.1", mac: "02:00:00:00:05:01"),
        ])
        let dev = node.device
        node.dp.modify { k in
            k.routes.removeAll { $0.destination == net("10.244.2.0/24") }
            if let i = k.neighbours.firstIndex(where: { $0.address == ip("10.244.3.0") }) {
                k.neighbours[i].mac = mac("02:00:00:00:09:09")
            }
            k.routes.append(
                Route(
                    destination: net("10.244.9.0/24"), gateway: ip("10.244.9.0"), interface: dev, onlink: true,
                    proto: RouteProtocol.podnet))
        }
        node.leases.sort { $0.subnet.address > $1.subnet.address }  // the report sorts
        return try node.report(
            daemon: DaemonStatus(endpoint: "http://127.0.0.1:8471", healthy: true, ready: true))
    }

    @Test func statusTableOfAHealthyNode() throws {
        try expectGolden("status-healthy.txt", renderTable(try TestNode().report(), colour: false))
    }

    @Test func statusTableWithDrift() throws {
        try expectGolden("status-drift.txt", renderTable(try mixedReport(), colour: false))
    }

    @Test func statusTableOfAHostGWNodeWithoutLease() throws {
        let node = try TestNode(backend: "host-gw")
        let report = NodeReport(
            config: node.config, own: nil, leases: Array(node.leases.dropFirst()), nodeAddresses: node.nodeAddresses,
            inspection: nil, subnetEnv: nil, now: now)
        try expectGolden("status-no-lease.txt", renderTable(report, colour: false))
    }

    @Test func checkPrintsOneLinePerProblem() throws {
        let text = renderProblems(try mixedReport())
        #expect(text.split(separator: "\n").count == 3)
        try expectGolden("check-drift.txt", text, width: nil)
    }

    @Test func leasesTable() throws {
        let node = try TestNode(extra: [
            lease("10.244.4.0/24", "192.168.50.14", mac: "02:00:00:00:04:01", ttl: nil),
            lease("10.244.5.0/24", "192.168.50.15", backend: "host-gw", ttl: nil),
        ])
        var leases = node.leases
        leases[1].expiration = nil  // an etcd lease whose TTL was not asked
        try expectGolden("leases.txt", renderLeases(leases, own: node.own.subnet, now: now))
        #expect(renderLeases([], now: now) == "no leases\n")
    }

    @Test func longDetailsWrapInsideEightyColumns() throws {
        let node = try TestNode(extra: [
            lease("10.244.4.0/24", "172.16.0.4", backend: "host-gw")
        ])
        // A long rejection reason, and a skip reason of host-gw's.
        let hostGW = try TestNode(backend: "host-gw", extra: [lease("10.244.4.0/24", "172.16.0.4", backend: "host-gw")])
        for report in [try node.report(), try hostGW.report()] {
            let text = renderTable(report, colour: false)
            #expect(text.split(separator: "\n").allSatisfy { $0.count <= 80 })
            #expect(!text.contains("\u{1B}"))
        }
        try expectGolden("status-skipped.txt", renderTable(try hostGW.report(), colour: false))
    }

    @Test func colourOnlyOnTheVerdicts() throws {
        let report = try mixedReport()
        let plain = renderTable(report, colour: false)
        let coloured = renderTable(report, colour: true)
        #expect(coloured.contains("\u{1B}[31mmissing\u{1B}[0m"))
        #expect(coloured.contains("\u{1B}[32mok\u{1B}[0m"))
        #expect(coloured.contains("\u{1B}[33mstale\u{1B}[0m"))
        #expect(coloured.contains("\u{1B}[36mrejected\u{1B}[0m"))
        #expect(stripEscapes(coloured) == plain)
    }

    @Test func subnetEnvIsReadAsTheCNIPluginReadsIt() throws {
        let text = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\n# comment\nFLANNEL_MTU=1450 \n"
        #expect(
            subnetEnvValues(text) == [
                "FLANNEL_NETWORK": "10.244.0.0/16", "FLANNEL_SUBNET": "10.244.1.1/24", "FLANNEL_MTU": "1450",
            ])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("podnet-subnet-\(UUID()).env").path
        #expect(readSubnetEnv(at: path) == nil)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(readSubnetEnv(at: path)?["FLANNEL_MTU"] == "1450")
    }

    @Test func colourNeedsATerminalAndNoNO_COLOR() {
        #expect(useColour(isTTY: true, environment: ["TERM": "xterm-256color"]))
        #expect(!useColour(isTTY: false, environment: ["TERM": "xterm-256color"]))
        #expect(!useColour(isTTY: true, environment: ["NO_COLOR": ""]))
        #expect(!useColour(isTTY: true, environment: ["NO_COLOR": "1"]))
        #expect(!useColour(isTTY: true, environment: ["TERM": "dumb"]))
    }

    @Test func reportJSONValidatesAgainstTheSchema() throws {
        let validator = try schema()
        for report in [try mixedReport(), try TestNode().report(), try TestNode(backend: "host-gw").report()] {
            let text = json(report)
            #expect(text.hasSuffix("}\n"))
            let value = try JSON(parsing: Array(text.utf8))
            #expect(validator.validate(value) == [])
            // Every key is present, null when empty: the schema requires them all.
            #expect(value["lease"]?["vtepMAC"] != nil)
            #expect(try JSONDecoder().decode(NodeReport.self, from: Data(text.utf8)) == report)
        }
        let noLease = NodeReport(
            config: try TestNode().config, own: nil, leases: [], nodeAddresses: [], inspection: nil, subnetEnv: nil,
            now: now)
        let value = try JSON(parsing: Array(json(noLease).utf8))
        #expect(validator.validate(value) == [])
        #expect(value["lease"] == .null && value["daemon"] == .null && value["device"] == .null)
    }

    @Test func reportJSONGolden() throws {
        try expectGolden("status-drift.json", json(try mixedReport()), width: nil)
    }

    @Test func leasesJSONValidatesAgainstTheSchema() throws {
        let node = try TestNode(extra: [lease("10.244.4.0/24", "192.168.50.14", mac: "02:00:00:00:04:01", ttl: nil)])
        let text = json(node.leases, now: now)
        let value = try JSON(parsing: Array(text.utf8))
        #expect(try schema().validate(value) == [])
        #expect(value["kind"] == .string("leases"))
        #expect(value["leases"]?.arrayValue?.count == 4)
        let first = value["leases"]?.arrayValue?.first
        #expect(first?["etcdLease"] == .string("694d7d3a5f8b1c20"))
        #expect(first?["ttlSeconds"] == .int(86_399))
        #expect(first?["expires"] == .string("2026-12-01T21:59:59Z"))
        #expect(try JSONDecoder().decode(LeaseList.self, from: Data(text.utf8)) == LeaseList(node.leases, now: now))
    }

    @Test func theValidatorRejectsWhatTheSchemaForbids() throws {
        let validator = try schema()
        var report = try JSON(parsing: Array(json(try mixedReport()).utf8)).objectValue!
        report["consistent"] = .string("no")
        report["extra"] = .int(1)
        report["problems"] = nil
        #expect(!validator.validate(.object(report)).isEmpty)
        let errors = validator.validate(.object(report), against: "#/$defs/report")
        #expect(errors.contains { $0.contains("required key problems missing") })
        #expect(errors.contains { $0.contains("key extra is not in the schema") })
    }

    // MARK: - Helpers

    private func schema() throws -> SchemaValidator {
        SchemaValidator(root: try JSON(parsing: Array(try Data(contentsOf: schemaURL()))))
    }

    /// `text` is golden/`name`, has no escapes, and no line longer than `width`.
    private func expectGolden(
        _ name: String, _ text: String, width: Int? = 80, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        for line in text.split(separator: "\n") where width != nil {
            #expect(line.count <= width!, "longer than \(width!) columns: \(line)", sourceLocation: sourceLocation)
        }
        #expect(!text.contains("\u{1B}"), sourceLocation: sourceLocation)
        let (url, expected) = try golden(name)
        if ProcessInfo.processInfo.environment["PODNET_UPDATE_GOLDEN"] != nil {
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        #expect(
            expected == text, "golden/\(name) differs; got:\n\(text)", sourceLocation: sourceLocation)
    }

    private func stripEscapes(_ s: String) -> String {
        var out = "", skipping = false
        for c in s {
            if c == "\u{1B}" { skipping = true; continue }
            if skipping { if c == "m" { skipping = false }; continue }
            out.append(c)
        }
        return out
    }
}
