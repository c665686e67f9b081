// How `podnetctl ipam` prints a data directory: an aligned table per network that fits 80
// columns (a full IPv6 address is 39 characters, container IDs are cut to 12 as docker and
// crictl show them, an interface name is at most 15), or JSON whose schema is
// docs/podnetctl-ipam-json.md (keys sorted, so the bytes are stable).

import Addressing
import IPAM
import JSONValue

/// What was read of one network: its reservations, or why they could not be read.
struct NetworkListing {
    var network: String
    var result: Result<NetworkReport, IPAMError>
    /// The use of each range, when the network's config was given (`--config`).
    var ranges: [RangeUse]?
}

enum IPAMOutput {
    /// The JSON schema's version; bumped only when a field changes meaning or goes away.
    static let schemaVersion: Int64 = 1

    /// The table: per network a title, one row per reservation, a summary line; a blank line
    /// between networks. `live` nil leaves the STATE column out.
    static func table(_ listings: [NetworkListing], live: Set<String>?, palette: Palette) -> String {
        var out = ""
        for (i, listing) in listings.enumerated() {
            if i > 0 { out += "\n" }
            out += palette.bold("network \(listing.network)") + "\n"
            let report: NetworkReport
            switch listing.result {
            case .failure(let error):
                out += "  " + palette.red("cannot read: \(error)") + "\n"
                continue
            case .success(let r): report = r
            }
            out += "  \(report.directory)\n"
            for use in listing.ranges ?? [] {
                let r = use.range
                out += "  range \(r.rangeStart)-\(r.rangeEnd) (\(r.subnet)): \(use.used)"
                out += (use.size.map { " of \($0)" } ?? "") + " used\n"
            }
            if report.reservations.isEmpty {
                out += "  no reservations\n"
            } else {
                let ipWidth = max(2, report.reservations.map { $0.ip.description.count }.max() ?? 0)
                let ifWidth = max(6, report.reservations.map { ($0.ifname ?? "-").count }.max() ?? 0)
                var header = "  " + pad("IP", ipWidth) + "  " + pad("CONTAINER", 12)
                header += live == nil ? "  IFNAME" : "  " + pad("IFNAME", ifWidth) + "  STATE"
                out += header + "\n"
                for r in report.reservations {
                    let id = r.containerID.isEmpty ? "-" : String(r.containerID.prefix(12))
                    var row = "  " + pad(r.ip.description, ipWidth) + "  " + pad(id, 12)
                    if let live {
                        row += "  " + pad(r.ifname ?? "-", ifWidth) + "  "
                        row += live.contains(r.containerID) ? palette.green("live") : palette.red("LEAKED")
                    } else {
                        row += "  " + (r.ifname ?? "-")
                    }
                    out += row + "\n"
                }
            }
            out += summary(report, live: live, palette: palette) + "\n"
        }
        if listings.isEmpty { out += "no networks\n" }
        return out
    }

    /// "cbr0: 4 reserved, 2 leaked" (", N leaked" only with a live set).
    static func summary(_ report: NetworkReport, live: Set<String>?, palette: Palette) -> String {
        var s = "\(report.network): \(report.reservations.count) reserved"
        if let live {
            let leaked = report.leaked(live: live).count
            s += ", " + (leaked == 0 ? "0 leaked" : palette.red("\(leaked) leaked"))
        }
        return s
    }

    /// The JSON document (docs/podnetctl-ipam-json.md), pretty-printed, with a final newline.
    /// `error` is why the data directory itself could not be listed.
    static func json(_ listings: [NetworkListing], dataDir: String, live: Set<String>?, error: String?) -> String {
        var networks: [JSON] = []
        for listing in listings {
            var o: [String: JSON] = ["name": .string(listing.network)]
            switch listing.result {
            case .failure(let error):
                o["error"] = .string(error.description)
                o["directory"] = .null
                o["reserved"] = .null
                o["leaked"] = .null
                o["reservations"] = .null
                o["ranges"] = .null
            case .success(let report):
                o["ranges"] =
                    listing.ranges.map { uses in
                        .array(
                            uses.map { use in
                                .object([
                                    "rangeSet": .int(Int64(use.rangeSet)),
                                    "subnet": .string(use.range.subnet.description),
                                    "rangeStart": .string(use.range.rangeStart.description),
                                    "rangeEnd": .string(use.range.rangeEnd.description),
                                    "gateway": .string(use.range.gateway.description),
                                    "size": use.size.map { .int($0) } ?? .null,
                                    "used": .int(Int64(use.used)),
                                ])
                            })
                    } ?? .null
                o["error"] = .null
                o["directory"] = .string(report.directory)
                o["reserved"] = .int(Int64(report.reservations.count))
                o["leaked"] = live.map { .int(Int64(report.leaked(live: $0).count)) } ?? .null
                o["reservations"] = .array(
                    report.reservations.map { r in
                        .object([
                            "ip": .string(r.ip.description),
                            "family": .int(r.ip.family == .v4 ? 4 : 6),
                            "containerID": .string(r.containerID),
                            "ifname": r.ifname.map { .string($0) } ?? .null,
                            "state": live.map { .string($0.contains(r.containerID) ? "live" : "leaked") } ?? .null,
                        ])
                    })
            }
            networks.append(.object(o))
        }
        let document: JSON = .object([
            "schemaVersion": .int(schemaVersion),
            "dataDir": .string(dataDir),
            "error": error.map { .string($0) } ?? .null,
            "liveIDs": live.map { .int(Int64($0.count)) } ?? .null,
            "networks": .array(networks),
        ])
        return String(decoding: document.encoded(pretty: true), as: UTF8.self) + "\n"
    }

    private static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }
}
