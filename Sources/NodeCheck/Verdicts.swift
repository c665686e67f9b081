// From leases and an inspection to rows and problems. A row's verdict is the worst of its
// entries' (wrong-mac, wrong, missing, then stale); each entry that is not ok is one problem
// naming it. Two exceptions keep the list readable: a missing tunnel device is one problem, not
// three per peer; and an entry the inspection attributes to a peer as "wrong" is not also stale.

import Addressing
import FoundationEssentials
import Overlay

struct Builder {
    let config: NetworkConfig
    let own: Lease?
    let inspection: Inspection?
    var problems: [Problem] = []

    init(config: NetworkConfig, own: Lease?, inspection: Inspection?) {
        self.config = config; self.own = own; self.inspection = inspection
    }

    private var deviceMissing: Bool { inspection.map { !$0.deviceFound } ?? false }

    mutating func checkLease() {
        guard let own else {
            problems.append(Problem(.noLease, "no lease for this node"))
            return
        }
        if own.attributes.backendType != config.backendType {
            problems.append(
                Problem(
                    .lease, subnet: "\(own.subnet)",
                    "this node's lease has BackendType \"\(own.attributes.backendType)\", "
                        + "the config says \"\(config.backendType)\""))
        }
        if let inspection, config.backendType == "vxlan", let mac = inspection.deviceMAC,
            own.peer.vtepMAC != mac
        {
            problems.append(
                Problem(
                    .lease, subnet: "\(own.subnet)",
                    "this node's lease has VtepMAC \(own.peer.vtepMAC?.description ?? "none"), "
                        + "\(inspection.device ?? "the device") has \(mac): peers send to the wrong MAC"))
        }
    }

    mutating func check(_ daemon: DaemonStatus) {
        let why = daemon.detail.map { ": \($0)" } ?? ""
        if daemon.healthy == nil && daemon.ready == nil {
            problems.append(Problem(.daemon, "podnetd at \(daemon.endpoint) did not answer\(why)"))
        } else if daemon.healthy == false {
            problems.append(Problem(.daemon, "podnetd at \(daemon.endpoint) is not healthy\(why)"))
        } else if daemon.ready == false {
            problems.append(Problem(.daemon, "podnetd at \(daemon.endpoint) is not ready\(why)"))
        }
    }

    /// subnet.env must exist and say what the lease and the config say (the CNI plugin gives pods
    /// its subnet and MTU).
    mutating func checkSubnetEnv(_ env: [String: String]?, path: String) {
        guard let env else {
            problems.append(Problem(.subnetEnvMissing, "subnet.env missing at \(path)"))
            return
        }
        func compare(_ key: String, _ want: String, same: (String) -> Bool) {
            guard let have = env[key] else {
                problems.append(Problem(.subnetEnv, "subnet.env at \(path) has no \(key) (want: \(want))"))
                return
            }
            if !same(have) {
                problems.append(Problem(.subnetEnv, "subnet.env at \(path) has \(key)=\(have), want \(want)"))
            }
        }
        for family in config.families {
            let range = config.range(family)!
            let (networkKey, subnetKey) =
                family == .v4 ? ("FLANNEL_NETWORK", "FLANNEL_SUBNET") : ("FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET")
            compare(networkKey, "\(range.network)") { IPNetwork($0)?.network == range.network }
            if let subnet = own?.subnet(family) {
                let want = IPNetwork(address: subnet.address.advanced(by: 1)!, prefixLength: subnet.prefixLength)!
                compare(subnetKey, "\(want)") { IPNetwork($0) == want }
            }
        }
        if let mtu = inspection?.mtu { compare("FLANNEL_MTU", "\(mtu)") { Int($0) == mtu } }
    }

    mutating func checkDevice() {
        guard let inspection, let name = inspection.device else { return }
        if !inspection.deviceFound {
            problems.append(
                Problem(.deviceMissing, "device \(name) missing: every peer's entries on it are missing"))
        }
        for p in inspection.deviceProblems { problems.append(Problem(.device, p)) }
    }

    /// The rows: one per lease by subnet, then one per subnet only the kernel knows.
    mutating func rows(leases: [Lease], nodeAddresses: [IPAddress], now: Date) -> [PeerRow] {
        let inspected = Dictionary(
            (inspection?.peers ?? []).map { ($0.peer.subnet, $0) }, uniquingKeysWith: { $1 })
        var stale = StaleGroups(inspection?.stale ?? [], leases: leases)
        var rows: [PeerRow] = []
        for lease in leases.sorted(by: { $0.subnet.address < $1.subnet.address }) {
            let (expires, ttl) = expiry(lease, now: now)
            var row = PeerRow(
                subnet: "\(lease.subnet)", publicIP: "\(lease.peer.publicIP)",
                backend: lease.attributes.backendType, vtepMAC: lease.peer.vtepMAC?.description,
                expires: expires, ttlSeconds: ttl, verdict: .unchecked, detail: "")
            var why: String
            if let rejection = config.check(peer: lease, backendType: config.backendType, nodeAddresses: nodeAddresses)
            {
                row.verdict = .rejected; row.detail = rejection.detail
                why = "lease rejected: \(rejection.detail)"
            } else if inspection == nil {
                row.detail = "kernel not inspected"
                why = "kernel not inspected"
            } else if let p = inspected[lease.subnet] {
                judge(p, into: &row)
                why = p.skipped.map { "peer skipped: \($0)" } ?? "not wanted for this lease"
            } else {
                row.detail = "not inspected"
                why = "not inspected"
            }
            addStale(stale.take(lease.subnet), why: why, to: &row)
            rows.append(row)
        }
        for (subnet, entries) in stale.remaining {
            var row = PeerRow(
                subnet: subnet.map { "\($0)" } ?? "-", publicIP: nil, backend: nil, vtepMAC: nil, verdict: .stale,
                detail: "no lease")
            row.publicIP = entries.lazy.compactMap(\.remote).first { !config.network.contains($0) }?.description
            row.vtepMAC = entries.lazy.compactMap(\.mac).first?.description
            addStale(entries, why: "no lease", to: &row)
            rows.append(row)
        }
        return rows
    }

    /// The verdict, entries and problems of an accepted lease's row.
    private mutating func judge(_ p: PeerInspection, into row: inout PeerRow) {
        let subnet = "\(p.peer.subnet)"
        if let reason = p.skipped {
            row.verdict = .skipped; row.detail = reason
            return
        }
        // With the device missing, its one problem stands for the entries on it.
        let quiet = deviceMissing && p.viaDevice
        var missing: [String] = [], wrong: [String] = []
        func note(_ kind: EntryRow.Kind, _ state: EntryState, _ problem: (String, String) -> Problem) {
            switch state {
            case .ok:
                row.entries.append(EntryRow(kind: kind, state: .ok, found: nil, wanted: nil))
            case .missing(let wanted):
                row.entries.append(EntryRow(kind: kind, state: .missing, found: nil, wanted: wanted))
                missing.append(kind.rawValue)
                let code: Problem.Code =
                    switch kind {
                    case .route: .routeMissing
                    case .neighbour: .neighbourMissing
                    case .fdb: .fdbMissing
                    }
                let name = kind == .fdb ? "fdb entry" : kind.rawValue
                if !quiet {
                    problems.append(Problem(code, subnet: subnet, "\(subnet): \(name) missing (want: \(wanted))"))
                }
            case .wrong(let found, let wanted):
                row.entries.append(EntryRow(kind: kind, state: .wrong, found: found, wanted: wanted))
                wrong.append(kind.rawValue)
                if !quiet { problems.append(problem(found, wanted)) }
            }
        }
        note(.route, p.route) { found, wanted in
            Problem(.routeWrong, subnet: subnet, "\(subnet): route is \(found) (want: \(wanted))")
        }
        if let n = p.neighbour {
            note(.neighbour, n) { found, wanted in
                if let have = p.neighbourMAC, let want = p.peer.vtepMAC {
                    return Problem(
                        .neighbourWrong, subnet: subnet,
                        "\(subnet): neighbour \(p.peer.subnet.address) has lladdr \(have), lease says \(want)")
                }
                return Problem(.neighbourWrong, subnet: subnet, "\(subnet): neighbour is \(found) (want: \(wanted))")
            }
        }
        if let f = p.fdb {
            note(.fdb, f) { found, wanted in
                if let have = p.fdbMAC, let want = p.peer.vtepMAC {
                    return Problem(
                        .fdbWrong, subnet: subnet,
                        "\(subnet): fdb entry to \(p.peer.publicIP) has MAC \(have), lease says \(want)")
                }
                return Problem(.fdbWrong, subnet: subnet, "\(subnet): fdb entry is \(found) (want: \(wanted))")
            }
        }
        if quiet && !(missing.isEmpty && wrong.isEmpty) {
            row.verdict = .missing; row.detail = "device \(inspection?.device ?? "") missing"
        } else if let mac = p.kernelMAC {
            row.verdict = .wrongMAC; row.detail = "kernel has \(mac)"
        } else if !wrong.isEmpty {
            row.verdict = .wrong
            row.detail = "wrong " + wrong.joined(separator: ", ")
            if !missing.isEmpty { row.detail += "; " + missing.joined(separator: ", ") + " missing" }
        } else if !missing.isEmpty {
            row.verdict = .missing; row.detail = missing.joined(separator: ", ") + " missing"
        } else {
            row.verdict = .ok
        }
    }

    /// Stale entries of a row's subnet: each a problem; the row's verdict becomes stale unless it
    /// is already worse.
    private mutating func addStale(_ entries: [StaleEntry], why: String, to row: inout PeerRow) {
        guard !entries.isEmpty else { return }
        for e in entries {
            let kind: EntryRow.Kind, code: Problem.Code, name: String
            switch e.kind {
            case .route: (kind, code, name) = (.route, .staleRoute, "route")
            case .neighbour: (kind, code, name) = (.neighbour, .staleNeighbour, "neighbour")
            case .fdb: (kind, code, name) = (.fdb, .staleFDB, "fdb entry")
            }
            row.entries.append(EntryRow(kind: kind, state: .stale, found: e.entry, wanted: nil))
            problems.append(
                Problem(code, subnet: row.subnet == "-" ? nil : row.subnet, "stale \(name) \(e.entry) (\(why))"))
        }
        let kinds = entries.map(\.kind.rawValue).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let note = "stale " + kinds.joined(separator: ", ")
        switch row.verdict {
        case .missing, .wrong, .wrongMAC:
            row.detail += "; " + note
        case .stale:
            row.detail = "no lease; " + note
        case .ok, .rejected, .skipped, .unchecked:
            row.detail = row.detail.isEmpty ? note : "\(note); \(row.detail)"
            row.verdict = .stale
        }
    }
}

/// Stale entries by the subnet they served: routes and neighbours by their subnet; an FDB entry
/// with the subnet of a stale neighbour of its MAC, else of a lease with that VtepMAC, else none.
struct StaleGroups {
    private var groups: [IPNetwork?: [StaleEntry]] = [:]

    init(_ stale: [StaleEntry], leases: [Lease]) {
        for e in stale {
            var subnet = e.subnet
            if e.kind == .fdb, let mac = e.mac {
                subnet =
                    stale.first { $0.kind == .neighbour && $0.mac == mac }?.subnet
                    ?? leases.first { $0.peer.vtepMAC == mac }?.subnet
            }
            groups[subnet, default: []].append(e)
        }
    }

    mutating func take(_ subnet: IPNetwork) -> [StaleEntry] { groups.removeValue(forKey: subnet) ?? [] }

    /// What no lease took: by subnet, the entries of no subnet last.
    var remaining: [(IPNetwork?, [StaleEntry])] {
        groups.sorted { l, r in
            switch (l.key, r.key) {
            case (let a?, let b?): a.address < b.address
            case (.some, nil): true
            default: false
            }
        }.map { ($0.key, $0.value) }
    }
}
