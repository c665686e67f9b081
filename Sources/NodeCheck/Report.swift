// One node's pod network as podnetctl reports it: this node's lease, subnet.env, the daemon's
// health, and a row per lease in etcd next to what this node's kernel has for it, with a verdict;
// then every problem, one sentence each, naming exactly the entry.
//
// The report judges nothing about the kernel itself: `NetworkConfig.inspect` (Overlay) compares
// the kernel as the daemon's reconcile does, and the leases are accepted or rejected by the same
// `NetworkConfig.check(peer:)` the daemon uses. A rejected lease is a row with its reason, not a
// problem of this node (every node rejects it alike); a skipped peer (the mode gives it nothing,
// e.g. host-gw across a router) is shown the same way. Problems are what podnetd would repair
// (entries missing, wrong or stale; the device; subnet.env; the lease's VtepMAC) or what keeps
// it from working (no lease, the daemon not ready).
//
// The model is plain strings, numbers and enums, so that it encodes to the JSON documented in
// docs/podnetctl-json.md as it is: every key is always present, null when it has no value.

import Addressing
import FoundationEssentials
import Overlay

/// Where flanneld and podnetd write subnet.env by default.
public let defaultSubnetEnvPath = "/run/flannel/subnet.env"

/// A row's verdict.
public enum Verdict: String, Codable, Equatable, Sendable, CaseIterable {
    /// The kernel has exactly what the lease needs.
    case ok
    /// Entries the lease needs are not in the kernel (or the tunnel device is missing).
    case missing
    /// The kernel's neighbour or FDB entry for the peer has another MAC than the lease's VtepMAC.
    case wrongMAC = "wrong-mac"
    /// The kernel has another entry where the lease needs one (another gateway, device, state).
    case wrong
    /// The kernel has entries of the network for this subnet that no lease needs.
    case stale
    /// The lease is not used: `NetworkConfig.check(peer:)` rejects it (the detail says why).
    case rejected
    /// The lease is accepted, but the mode gives its peer nothing (the detail says why).
    case skipped
    /// The kernel was not compared for this lease.
    case unchecked
}

/// One kernel entry of a row.
public struct EntryRow: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Equatable, Sendable { case route, neighbour, fdb }
    public enum State: String, Codable, Equatable, Sendable { case ok, missing, wrong, stale }
    public var kind: Kind
    public var state: State
    /// What the kernel has (nil when missing, or ok and the same as `wanted`).
    public var found: String?
    /// What the lease needs (nil for a stale entry).
    public var wanted: String?

    public init(kind: Kind, state: State, found: String?, wanted: String?) {
        self.kind = kind; self.state = state; self.found = found; self.wanted = wanted
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind); try c.encode(state, forKey: .state)
        try c.encode(found, forKey: .found); try c.encode(wanted, forKey: .wanted)
    }
}

/// A lease in etcd (or, for a stale row, a subnet only the kernel knows) and its verdict.
public struct PeerRow: Codable, Equatable, Sendable {
    /// "10.244.2.0/24"; "-" for stale FDB entries that belong to no subnet.
    public var subnet: String
    public var publicIP: String?
    /// The lease's BackendType; nil for a stale row.
    public var backend: String?
    public var vtepMAC: String?
    /// When the lease expires (ISO 8601, UTC), when known.
    public var expires: String?
    public var ttlSeconds: Int?
    public var verdict: Verdict
    /// A short explanation ("" when ok): what is missing, the rejection's or skip's reason.
    public var detail: String
    /// The kernel entries compared (none for rejected, skipped and unchecked rows).
    public var entries: [EntryRow]

    public init(
        subnet: String, publicIP: String?, backend: String?, vtepMAC: String?, expires: String? = nil,
        ttlSeconds: Int? = nil, verdict: Verdict, detail: String, entries: [EntryRow] = []
    ) {
        self.subnet = subnet; self.publicIP = publicIP; self.backend = backend; self.vtepMAC = vtepMAC
        self.expires = expires; self.ttlSeconds = ttlSeconds; self.verdict = verdict; self.detail = detail
        self.entries = entries
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(subnet, forKey: .subnet); try c.encode(publicIP, forKey: .publicIP)
        try c.encode(backend, forKey: .backend); try c.encode(vtepMAC, forKey: .vtepMAC)
        try c.encode(expires, forKey: .expires); try c.encode(ttlSeconds, forKey: .ttlSeconds)
        try c.encode(verdict, forKey: .verdict); try c.encode(detail, forKey: .detail)
        try c.encode(entries, forKey: .entries)
    }
}

/// One problem: what podnetctl check prints, one line each.
public struct Problem: Codable, Equatable, Sendable, CustomStringConvertible {
    /// A stable name of the kind of problem, for scripts.
    public enum Code: String, Codable, Equatable, Sendable, CaseIterable {
        case routeMissing = "route-missing", neighbourMissing = "neighbour-missing", fdbMissing = "fdb-missing"
        case routeWrong = "route-wrong", neighbourWrong = "neighbour-wrong", fdbWrong = "fdb-wrong"
        case staleRoute = "stale-route", staleNeighbour = "stale-neighbour", staleFDB = "stale-fdb"
        case deviceMissing = "device-missing", device
        case noLease = "no-lease", lease
        case subnetEnvMissing = "subnet-env-missing", subnetEnv = "subnet-env"
        case daemon
    }
    public var code: Code
    /// The peer subnet it concerns, when it concerns one.
    public var subnet: String?
    /// One line naming exactly the entry, e.g. "10.244.2.0/24: route missing (want: 10.244.2.0/24
    /// via 10.244.2.0 dev flannel.1 onlink)".
    public var message: String

    public init(_ code: Code, subnet: String? = nil, _ message: String) {
        self.code = code; self.subnet = subnet; self.message = message
    }

    public var description: String { message }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(code, forKey: .code); try c.encode(subnet, forKey: .subnet)
        try c.encode(message, forKey: .message)
    }
}

/// This node's lease.
public struct OwnLease: Codable, Equatable, Sendable {
    public var subnet: String
    public var publicIP: String
    public var backend: String
    public var vtepMAC: String?
    /// ISO 8601, UTC; nil for a reservation or when not known.
    public var expires: String?
    public var ttlSeconds: Int?
    /// A key put without an etcd lease: it never expires.
    public var reservation: Bool

    public init(_ lease: Lease, now: Date) {
        subnet = "\(lease.subnet)"; publicIP = "\(lease.peer.publicIP)"; backend = lease.attributes.backendType
        vtepMAC = lease.peer.vtepMAC?.description
        (expires, ttlSeconds) = expiry(lease, now: now)
        reservation = lease.isReservation
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(subnet, forKey: .subnet); try c.encode(publicIP, forKey: .publicIP)
        try c.encode(backend, forKey: .backend); try c.encode(vtepMAC, forKey: .vtepMAC)
        try c.encode(expires, forKey: .expires); try c.encode(ttlSeconds, forKey: .ttlSeconds)
        try c.encode(reservation, forKey: .reservation)
    }
}

/// subnet.env as found.
public struct SubnetEnvStatus: Codable, Equatable, Sendable {
    public var path: String
    public var present: Bool
    /// Its variables (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ, ...).
    public var values: [String: String]?

    public init(path: String, values: [String: String]?) {
        self.path = path; present = values != nil; self.values = values
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(path, forKey: .path); try c.encode(present, forKey: .present)
        try c.encode(values, forKey: .values)
    }
}

/// The daemon's health and readiness, as its health port answered (`/healthz`, `/readyz`).
public struct DaemonStatus: Codable, Equatable, Sendable {
    /// Where it was asked, e.g. "http://127.0.0.1:8471".
    public var endpoint: String
    /// nil when it did not answer.
    public var healthy: Bool?
    public var ready: Bool?
    /// What it answered when not healthy or not ready, or why it did not answer.
    public var detail: String?

    public init(endpoint: String, healthy: Bool?, ready: Bool?, detail: String? = nil) {
        self.endpoint = endpoint; self.healthy = healthy; self.ready = ready; self.detail = detail
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(endpoint, forKey: .endpoint); try c.encode(healthy, forKey: .healthy)
        try c.encode(ready, forKey: .ready); try c.encode(detail, forKey: .detail)
    }
}

/// The tunnel device (vxlan, ipip).
public struct DeviceStatus: Codable, Equatable, Sendable {
    public var name: String
    public var found: Bool
    public var mac: String?
    /// What podnetd would fix on it, one sentence each.
    public var problems: [String]

    public init(name: String, found: Bool, mac: String?, problems: [String]) {
        self.name = name; self.found = found; self.mac = mac; self.problems = problems
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name); try c.encode(found, forKey: .found)
        try c.encode(mac, forKey: .mac); try c.encode(problems, forKey: .problems)
    }
}

/// What `podnetctl status` and `check` show: see the file's note.
public struct NodeReport: Codable, Equatable, Sendable {
    /// "report": tells this document from `podnetctl leases --json`'s.
    public var kind = "report"
    /// The schema's version: changes only when a key is removed or changes meaning.
    public var version = 1
    /// When it was made (ISO 8601, UTC).
    public var time: String
    /// The config's Network and backend type.
    public var network: String
    public var backend: String
    /// This node's lease; nil when it has none.
    public var lease: OwnLease?
    public var subnetEnv: SubnetEnvStatus
    /// nil when the daemon was not asked (no health address given).
    public var daemon: DaemonStatus?
    /// The tunnel device; nil for host-gw, or when the kernel was not inspected.
    public var device: DeviceStatus?
    /// False when the kernel was not compared (no lease for this node, say): rows are unchecked.
    public var inspected: Bool
    /// One per lease in etcd other than this node's, by subnet, then one per stale subnet.
    public var peers: [PeerRow]
    public var problems: [Problem]
    /// No problems: what `podnetctl check` exits 0 for.
    public var consistent: Bool

    /// - Parameters:
    ///   - config: the network config from etcd.
    ///   - own: this node's lease (`ownLease(in:publicIP:)`), nil when it has none.
    ///   - leases: every lease in etcd (this node's is left out of the rows).
    ///   - nodeAddresses: this node's interface address and public IP, as podnetd checks leases with.
    ///   - inspection: the kernel compared with the accepted peers (`NetworkConfig.inspect`, with
    ///     `peers(from:own:nodeAddresses:)`); nil when it could not be made.
    ///   - subnetEnv: subnet.env's variables; nil when the file does not exist.
    ///   - daemon: the daemon's health, when asked.
    ///   - now: the time TTLs count from.
    public init(
        config: NetworkConfig, own: Lease?, leases: [Lease], nodeAddresses: [IPAddress], inspection: Inspection?,
        subnetEnv: [String: String]?, subnetEnvPath: String = defaultSubnetEnvPath, daemon: DaemonStatus? = nil,
        now: Date = Date()
    ) {
        var builder = Builder(config: config, own: own, inspection: inspection)
        time = iso8601(now)
        network = "\(config.network)"
        backend = config.backendType
        lease = own.map { OwnLease($0, now: now) }
        self.subnetEnv = SubnetEnvStatus(path: subnetEnvPath, values: subnetEnv)
        self.daemon = daemon
        inspected = inspection != nil
        if let inspection, let name = inspection.device {
            device = DeviceStatus(
                name: name, found: inspection.deviceFound, mac: inspection.deviceMAC?.description,
                problems: inspection.deviceProblems)
        }
        builder.checkLease()
        if let daemon { builder.check(daemon) }
        builder.checkSubnetEnv(subnetEnv, path: subnetEnvPath)
        builder.checkDevice()
        peers = builder.rows(
            leases: leases.filter { $0.subnet != own?.subnet }, nodeAddresses: nodeAddresses, now: now)
        problems = builder.problems
        consistent = problems.isEmpty
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind); try c.encode(version, forKey: .version); try c.encode(time, forKey: .time)
        try c.encode(network, forKey: .network); try c.encode(backend, forKey: .backend)
        try c.encode(lease, forKey: .lease); try c.encode(subnetEnv, forKey: .subnetEnv)
        try c.encode(daemon, forKey: .daemon); try c.encode(device, forKey: .device)
        try c.encode(inspected, forKey: .inspected); try c.encode(peers, forKey: .peers)
        try c.encode(problems, forKey: .problems); try c.encode(consistent, forKey: .consistent)
    }
}

/// The variables of a subnet.env text: `KEY=VALUE` lines; blank lines and `#` comments skipped.
public func subnetEnvValues(_ text: String) -> [String: String] {
    var values: [String: String] = [:]
    for line in text.split(whereSeparator: \.isNewline) {
        let l = line.drop { $0 == " " }
        guard !l.hasPrefix("#"), let eq = l.firstIndex(of: "=") else { continue }
        values[String(l[..<eq])] = String(l[l.index(after: eq)...]).trimmingTrailingSpaces
    }
    return values
}

/// The variables of the subnet.env at `path`; nil when it cannot be read (missing).
public func readSubnetEnv(at path: String = defaultSubnetEnvPath) -> [String: String]? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    return subnetEnvValues(String(decoding: data, as: UTF8.self))
}

extension String {
    fileprivate var trimmingTrailingSpaces: String { String(reversed().drop { $0 == " " }.reversed()) }
}

/// This node's lease among `leases`: the one carrying its public IP, as podnetd's subnet manager
/// finds it on start-up.
public func ownLease(in leases: [Lease], publicIP: IPAddress) -> Lease? {
    leases.first { publicIP.family == .v4 ? $0.attributes.publicIP == publicIP : $0.attributes.publicIPv6 == publicIP }
}

extension NetworkConfig {
    /// The peers podnetd programs from `leases`: every lease but this node's own (`own`) that
    /// `check(peer:backendType:nodeAddresses:)` accepts, as the daemon's NodeState takes them.
    public func peers(from leases: [Lease], own: IPNetwork?, nodeAddresses: [IPAddress]) -> [Peer] {
        leases.filter { l in
            l.subnet != own && check(peer: l, backendType: backendType, nodeAddresses: nodeAddresses) == nil
        }.map(\.peer)
    }
}

/// (ISO 8601 expiry, whole seconds left) of a lease, when it has an expiry.
func expiry(_ lease: Lease, now: Date) -> (String?, Int?) {
    guard let e = lease.expiration else { return (nil, nil) }
    let left = e.timeIntervalSince(now).rounded(.down)
    return (iso8601(e), Int(exactly: max(0, min(left, 1e15))))
}

func iso8601(_ date: Date) -> String { Date.ISO8601FormatStyle().format(date) }
