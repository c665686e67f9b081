// host-local's configuration, read from the whole upper-plugin config (allocator/config.go):
// `ipam.ranges`, the legacy single range `ipam.subnet/rangeStart/rangeEnd/gateway` (prepended as
// range set 0), `runtimeConfig.ipRanges` (prepended before both), `ipam.routes`, `ipam.dataDir`,
// `ipam.resolvConf`, and the requested addresses from CNI_ARGS `IP=`, `args.cni.ips` and
// `runtimeConfig.ips`, combined in that order.

import Addressing
import CNI
import IPAM

public struct HostLocalConfig: Sendable {
    /// The network name; the reservations live in `<dataDir>/<network>`.
    public var network: String
    /// Nil means DiskStore.defaultDataDir.
    public var dataDir: String?
    /// One address is allocated from each set, in order.
    public var rangeSets: [IPRangeSet]
    /// Copied verbatim into the result.
    public var routes: [Result.Route]
    public var resolvConf: String?
    public var requestedIPs: [IPAddress]

    /// Reads and validates everything ADD needs. Configuration errors are code 7, a bad CNI_ARGS
    /// value code 4, with the reference's messages.
    public init(_ request: Request) throws(CNIError) {
        let ipam = try Self.ipamSection(request)
        network = request.name
        dataDir = try Self.dataDir(ipam)
        resolvConf = try ipam.value("resolvConf", as: String.self, path: "ipam.resolvConf").flatMap {
            $0.isEmpty ? nil : $0
        }
        requestedIPs = try Self.requestedIPs(request)

        var raw: [(path: String, ranges: [JSON])] = []
        for (i, set)
            in (try request.runtimeConfig.value("ipRanges", as: [[JSON]].self, path: "runtimeConfig.ipRanges") ?? [])
            .enumerated()
        {
            raw.append(("runtimeConfig.ipRanges[\(i)]", set))
        }
        if let subnet = try ipam.value("subnet", as: String.self, path: "ipam.subnet"), !subnet.isEmpty {
            raw.append(("ipam", [.object(ipam)]))
        }
        for (i, set) in (try ipam.value("ranges", as: [[JSON]].self, path: "ipam.ranges") ?? []).enumerated() {
            raw.append(("ipam.ranges[\(i)]", set))
        }
        if raw.isEmpty { throw CNIError(.invalidNetworkConfig, "no IP ranges specified") }

        rangeSets = []
        for (i, set) in raw.enumerated() {
            let fail = { (why: String) in CNIError(.invalidNetworkConfig, "invalid range set \(i): \(why)") }
            var ranges: [IPRange] = []
            for (j, r) in set.ranges.enumerated() {
                ranges.append(try Self.range(r, path: set.path == "ipam" ? "ipam" : "\(set.path)[\(j)]", fail: fail))
            }
            do throws(IPAMError) { rangeSets.append(try IPRangeSet(ranges)) } catch { throw fail(error.description) }
        }
        // Spec 0.1.0/0.2.0 results hold one ip4 and one ip6.
        let v4 = rangeSets.filter { $0.family == .v4 }.count
        if (v4 > 1 || rangeSets.count - v4 > 1) && request.version < .v0_3_0 {
            throw CNIError(
                .invalidNetworkConfig,
                "CNI version \(request.version.rawValue) does not support more than 1 address per family")
        }
        do throws(IPAMError) { try IPRangeSet.checkDisjoint(rangeSets) } catch {
            throw CNIError(.invalidNetworkConfig, error.description)
        }

        routes = []
        for (i, r) in (try ipam.value("routes", as: [JSON].self, path: "ipam.routes") ?? []).enumerated() {
            routes.append(try Result.Route(json: r, path: "ipam.routes[\(i)]"))
        }
    }

    /// Where the reservations are, which is all DEL and GC need: they work from `name` and
    /// `ipam.dataDir` alone, so a config whose ranges no longer validate can still be cleaned up.
    public static func store(_ request: Request) throws(CNIError) -> (network: String, dataDir: String?) {
        (request.name, try dataDir(try ipamSection(request)))
    }

    // MARK: - Pieces

    static func ipamSection(_ request: Request) throws(CNIError) -> [String: JSON] {
        guard let ipam = try request.config.object("ipam") else {
            throw CNIError(.invalidNetworkConfig, "IPAM config missing 'ipam' key")
        }
        return ipam
    }

    static func dataDir(_ ipam: [String: JSON]) throws(CNIError) -> String? {
        try ipam.value("dataDir", as: String.self, path: "ipam.dataDir").flatMap { $0.isEmpty ? nil : $0 }
    }

    /// One range object: `{subnet, rangeStart?, rangeEnd?, gateway?}`. Every problem is reported
    /// through `fail`, which adds "invalid range set i: ".
    static func range(_ json: JSON, path: String, fail: (String) -> CNIError) throws(CNIError) -> IPRange {
        func address(_ o: [String: JSON], _ key: String) throws(CNIError) -> IPAddress? {
            guard let s = try string(o, key) else { return nil }
            guard let ip = parseIP(s) else { throw fail("invalid IP address: \(s)") }
            return ip
        }
        func string(_ o: [String: JSON], _ key: String) throws(CNIError) -> String? {
            guard let (keyPath, v) = try o.member(key, path: "\(path).\(key)") else { return nil }
            guard let s = v.stringValue else { throw fail("\"\(keyPath)\" must be a string, got \(v.text)") }
            return s.isEmpty ? nil : s
        }
        guard let o = json.objectValue else { throw fail("\(path) must be an object, got \(json.text)") }
        guard let s = try string(o, "subnet") else { throw fail("\(path).subnet is missing") }
        guard let subnet = IPNetwork(s) else { throw fail("invalid CIDR address: \(s)") }
        let start = try address(o, "rangeStart"), end = try address(o, "rangeEnd"), gw = try address(o, "gateway")
        do throws(IPAMError) {
            return try IPRange(subnet: subnet, rangeStart: start, rangeEnd: end, gateway: gw)
        } catch {
            throw fail(error.description)
        }
    }

    static func requestedIPs(_ request: Request) throws(CNIError) -> [IPAddress] {
        var out: [IPAddress] = []
        if let s = try request.env.arg("IP", known: ["IP"]), !s.isEmpty {
            guard let ip = parseIP(s) else {
                throw CNIError(.invalidEnvironment, "ARGS: invalid IP address in \"IP=\(s)\"")
            }
            out.append(ip)
        }
        let fromArgs =
            try request.config.object("args")?.object("cni", path: "args.cni")?
            .value("ips", as: [String].self, path: "args.cni.ips") ?? []
        let fromRuntime = try request.runtimeConfig.value("ips", as: [String].self, path: "runtimeConfig.ips") ?? []
        for (path, list) in [("args.cni.ips", fromArgs), ("runtimeConfig.ips", fromRuntime)] {
            for s in list {
                guard let ip = parseIP(s) else {
                    throw CNIError(.invalidNetworkConfig, "invalid IP address in \(path): \"\(s)\"")
                }
                out.append(ip)
            }
        }
        return out
    }

    /// "10.1.2.3", "fd00::5" or with a prefix, which is ignored. An IPv4-mapped IPv6 address
    /// becomes IPv4, as Go's To4 canonicalization does.
    static func parseIP(_ text: String) -> IPAddress? {
        let s = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        if s.count == 2, IPNetwork(text) == nil { return nil }
        guard let ip = IPAddress(s[0]) else { return nil }
        if ip.family == .v6, ip.value >> 32 == 0xffff { return IPAddress(family: .v4, value: ip.value) }
        return ip
    }
}
