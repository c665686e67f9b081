// Human output for an 80-column terminal, and JSON. Tables size their columns to their content
// and give the last column (a row's detail) what is left of the 80 columns, wrapping it by words;
// when too little is left, the detail goes on its own indented lines under the row. Nothing is
// cut: a line never exceeds 80 columns except for a single word longer than that. Colour (SGR
// escapes, on the verdict only) is added after padding, so it never shifts the columns.

import Addressing
import FoundationEssentials
import Overlay

/// The terminal width human output fits.
public let outputWidth = 80

/// Whether to colour: only on a terminal, never with NO_COLOR set (to any value, even empty:
/// no-color.org), nor with TERM=dumb.
public func useColour(isTTY: Bool, environment: [String: String]) -> Bool {
    isTTY && environment["NO_COLOR"] == nil && environment["TERM"] != "dumb"
}

/// `podnetctl status`: this node, then one row per lease, then the problems.
public func renderTable(_ report: NodeReport, colour: Bool) -> String {
    var out = ""
    func field(_ label: String, _ value: String) {
        out += wrap(value, width: outputWidth - 12, first: pad(label, 12), rest: String(repeating: " ", count: 12))
    }
    field("network", "\(report.network), \(report.backend)")
    if let l = report.lease {
        field("node", "\(l.subnet) at \(l.publicIP), \(l.backend)" + (l.vtepMAC.map { ", VTEP \($0)" } ?? ""))
        if l.reservation {
            field("lease", "reservation (never expires)")
        } else if let e = l.expires {
            field("lease", "expires \(e)" + (l.ttlSeconds.map { " (in \(duration($0)))" } ?? ""))
        } else {
            field("lease", "expiry not known")
        }
    } else {
        field("node", "no lease")
    }
    if let d = report.daemon {
        let state: String
        if d.healthy == nil && d.ready == nil {
            state = "no answer"
        } else {
            state = "\(d.healthy == true ? "healthy" : "not healthy"), \(d.ready == true ? "ready" : "not ready")"
        }
        field("podnetd", state + (d.detail.map { ": \($0)" } ?? "") + " (\(d.endpoint))")
    } else {
        field("podnetd", "not asked (no health address)")
    }
    let env = report.subnetEnv
    let envProblems = report.problems.contains { $0.code == .subnetEnv }
    if !env.present {
        field("subnet.env", "missing at \(env.path)")
    } else if envProblems {
        field("subnet.env", "\(env.path), differs (see below)")
    } else {
        field("subnet.env", env.path + (report.lease == nil ? "" : ", as the lease says"))
    }
    if let d = report.device {
        field(
            "device",
            d.found
                ? d.name + (d.mac.map { ", MAC \($0)" } ?? "")
                    + (d.problems.isEmpty ? "" : ", needs repair (see below)") : "\(d.name) missing")
    }
    if !report.inspected { field("kernel", "not inspected") }
    out += "\n"

    if report.peers.isEmpty {
        out += "no leases of other nodes\n"
    } else {
        let showBackend = report.peers.contains { $0.backend != nil && $0.backend != report.backend }
        let showMAC = report.peers.contains { $0.vtepMAC != nil }
        var headers = ["SUBNET", "PUBLIC IP"]
        if showBackend { headers.append("BACKEND") }
        if showMAC { headers.append("VTEP MAC") }
        headers += ["VERDICT", "DETAIL"]
        let rows = report.peers.map { p -> [String] in
            var cells = [p.subnet, p.publicIP ?? "-"]
            if showBackend { cells.append(p.backend ?? "-") }
            if showMAC { cells.append(p.vtepMAC ?? "-") }
            return cells + [p.verdict.rawValue, p.detail]
        }
        out += table(headers: headers, rows: rows) { column, text in
            column == headers.count - 2 && colour ? paint(text, Verdict(rawValue: text)) : text
        }
    }
    out += "\n"
    if report.problems.isEmpty {
        out += "no problems\n"
    } else {
        out += report.problems.count == 1 ? "1 problem:\n" : "\(report.problems.count) problems:\n"
        for p in report.problems { out += wrap(p.message, width: outputWidth - 2, first: "- ", rest: "    ") }
    }
    return out
}

/// `podnetctl check`: one line per problem, nothing when there is none.
public func renderProblems(_ report: NodeReport) -> String {
    report.problems.map { $0.message + "\n" }.joined()
}

/// `podnetctl leases`: subnet, public IP, backend, VTEP MAC and TTL (seconds left; "never" for a
/// reservation, "-" when not known) of each lease, by subnet. `own`: this node's subnet, marked
/// with "*".
public func renderLeases(_ leases: [Lease], own: IPNetwork? = nil, now: Date = Date()) -> String {
    guard !leases.isEmpty else { return "no leases\n" }
    let rows = leases.sorted { $0.subnet.address < $1.subnet.address }.map { l -> [String] in
        let ttl = l.isReservation ? "never" : expiry(l, now: now).1.map { "\($0)" } ?? "-"
        return [
            "\(l.subnet)" + (l.subnet == own ? "*" : ""), "\(l.peer.publicIP)", l.attributes.backendType,
            l.peer.vtepMAC?.description ?? "-", ttl,
        ]
    }
    let legend = leases.contains { $0.subnet == own } ? "* this node\n" : ""
    return table(headers: ["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "TTL"], rows: rows) { $1 } + legend
}

// MARK: - JSON

/// The report as JSON (docs/podnetctl-json.md): keys sorted, two-space indentation, a final newline.
public func json(_ report: NodeReport) -> String { encode(report) }

/// `podnetctl leases --json`.
public func json(_ leases: [Lease], now: Date = Date()) -> String { encode(LeaseList(leases, now: now)) }

/// `podnetctl leases --json`: every lease, by subnet.
public struct LeaseList: Codable, Equatable, Sendable {
    public var kind = "leases"
    public var version = 1
    public var time: String
    public var leases: [LeaseRow]

    public init(_ leases: [Lease], now: Date = Date()) {
        time = iso8601(now)
        self.leases = leases.sorted { $0.subnet.address < $1.subnet.address }.map { LeaseRow($0, now: now) }
    }
}

/// One lease in `LeaseList`.
public struct LeaseRow: Codable, Equatable, Sendable {
    public var subnet: String
    public var publicIP: String
    public var backend: String
    public var vni: Int?
    public var vtepMAC: String?
    /// The etcd lease ID in hex, as etcdctl prints it; nil for a reservation.
    public var etcdLease: String?
    public var expires: String?
    public var ttlSeconds: Int?
    public var reservation: Bool

    public init(_ lease: Lease, now: Date) {
        subnet = "\(lease.subnet)"; publicIP = "\(lease.peer.publicIP)"; backend = lease.attributes.backendType
        vni = lease.attributes.vni.map { Int(truncatingIfNeeded: $0) }
        vtepMAC = lease.peer.vtepMAC?.description
        etcdLease = lease.etcdLease.map { String(UInt64(bitPattern: $0), radix: 16) }
        (expires, ttlSeconds) = expiry(lease, now: now)
        reservation = lease.isReservation
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(subnet, forKey: .subnet); try c.encode(publicIP, forKey: .publicIP)
        try c.encode(backend, forKey: .backend); try c.encode(vni, forKey: .vni)
        try c.encode(vtepMAC, forKey: .vtepMAC); try c.encode(etcdLease, forKey: .etcdLease)
        try c.encode(expires, forKey: .expires); try c.encode(ttlSeconds, forKey: .ttlSeconds)
        try c.encode(reservation, forKey: .reservation)
    }
}

private func encode(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    // The model holds only strings, numbers, booleans, arrays and objects: encoding cannot fail.
    guard let data = try? encoder.encode(value) else { return "{}\n" }
    return String(decoding: data, as: UTF8.self) + "\n"
}

// MARK: - Layout

/// Columns sized to their content, two spaces apart; the last one wrapped into what is left of
/// the width, or put on indented lines of its own when less than 16 columns are left and some
/// cell would need wrapping. `style`
/// may decorate a cell (column, text) with zero-width escapes; padding is added after it.
func table(headers: [String], rows: [[String]], style: (Int, String) -> String) -> String {
    let fixed = headers.count - 1
    var widths = headers.map(\.count)
    for r in rows { for i in 0..<fixed { widths[i] = max(widths[i], r[i].count) } }
    let offset = widths[..<fixed].reduce(0) { $0 + $1 + 2 }
    let room = outputWidth - offset
    let inline = room >= 16 || rows.allSatisfy { $0[fixed].count <= room }
    func line(_ cells: [String], header: Bool) -> String {
        var s = ""
        for i in 0..<fixed {
            s +=
                (header ? cells[i] : style(i, cells[i])) + String(repeating: " ", count: widths[i] - cells[i].count + 2)
        }
        let last = cells[fixed]
        if last.isEmpty { return s.trailingSpacesRemoved + "\n" }
        if inline {
            return wrap(last, width: outputWidth - offset, first: s, rest: String(repeating: " ", count: offset))
        }
        if header { return s.trailingSpacesRemoved + "\n" }
        return s.trailingSpacesRemoved + "\n" + wrap(last, width: outputWidth - 4, first: "    ", rest: "    ")
    }
    return line(headers, header: true) + rows.map { line($0, header: false) }.joined()
}

/// `text` wrapped at spaces into lines of at most `width` characters after their prefix: `first`
/// before the first line, `rest` before the others; each line ends with a newline.
func wrap(_ text: String, width: Int, first: String, rest: String) -> String {
    var lines: [String] = [], current = ""
    for word in text.split(separator: " ", omittingEmptySubsequences: true) {
        if current.isEmpty {
            current = String(word)
        } else if current.count + 1 + word.count <= width {
            current += " " + word
        } else {
            lines.append(current); current = String(word)
        }
    }
    lines.append(current)
    return lines.enumerated().map { ($0.offset == 0 ? first : rest) + $0.element + "\n" }.joined()
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

/// "23h59m", "59m59s", "42s".
func duration(_ seconds: Int) -> String {
    let h = seconds / 3600, m = seconds % 3600 / 60, s = seconds % 60
    if h > 0 { return "\(h)h\(m < 10 ? "0" : "")\(m)m" }
    if m > 0 { return "\(m)m\(s < 10 ? "0" : "")\(s)s" }
    return "\(s)s"
}

/// A verdict in its colour: green ok, red for drift, yellow stale, cyan for leases not used.
func paint(_ text: String, _ verdict: Verdict?) -> String {
    let code: String
    switch verdict {
    case .ok?: code = "32"
    case .missing?, .wrong?, .wrongMAC?: code = "31"
    case .stale?: code = "33"
    case .rejected?, .skipped?, .unchecked?: code = "36"
    case nil: return text
    }
    return "\u{1B}[\(code)m\(text)\u{1B}[0m"
}

extension String {
    fileprivate var trailingSpacesRemoved: String { String(self.reversed().drop { $0 == " " }.reversed()) }
}
