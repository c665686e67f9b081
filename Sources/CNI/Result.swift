// The CNI result, held in the newest (1.1.0) shape and converted on the way in and out.
//
// Conversion rules follow the Go library (pkg/types/{020,040,100}):
// - 0.1/0.2 -> newer: ip4 then ip6 become ips[]; their routes are concatenated; no interfaces.
// - newer -> 0.1/0.2: only the first v4 and the first v6 address survive; each route goes to the
//   family of its dst if that family has an address; interfaces are dropped; with no address at
//   all the conversion fails ("cannot convert: no valid IP addresses").
// - 0.3/0.4 carry ips[].version; 1.x drops it. 1.1.0 adds interface mtu/socketPath/pciID and the
//   extra route fields, which older layouts drop (interfaces) or keep (routes, as Go does).

import Addressing

public struct Result: Equatable, Sendable {
    public struct Interface: Equatable, Sendable {
        public var name: String
        public var mac: String?
        public var mtu: Int?
        public var sandbox: String?
        public var socketPath: String?
        public var pciID: String?
        public init(
            name: String, mac: String? = nil, mtu: Int? = nil, sandbox: String? = nil,
            socketPath: String? = nil, pciID: String? = nil
        ) {
            self.name = name; self.mac = mac; self.mtu = mtu; self.sandbox = sandbox
            self.socketPath = socketPath; self.pciID = pciID
        }
    }

    public struct IPConfig: Equatable, Sendable {
        public var address: IPNetwork
        public var gateway: IPAddress?
        public var interface: Int?
        public init(address: IPNetwork, gateway: IPAddress? = nil, interface: Int? = nil) {
            self.address = address; self.gateway = gateway; self.interface = interface
        }
    }

    public struct Route: Equatable, Sendable {
        public var dst: IPNetwork
        public var gw: IPAddress?
        public var mtu: Int?
        public var advmss: Int?
        public var priority: Int?
        public var table: Int?
        public var scope: Int?
        public init(
            dst: IPNetwork, gw: IPAddress? = nil, mtu: Int? = nil, advmss: Int? = nil,
            priority: Int? = nil, table: Int? = nil, scope: Int? = nil
        ) {
            self.dst = dst; self.gw = gw; self.mtu = mtu; self.advmss = advmss
            self.priority = priority; self.table = table; self.scope = scope
        }
    }

    public struct DNS: Equatable, Sendable {
        public var nameservers: [String] = []
        public var domain: String?
        public var search: [String] = []
        public var options: [String] = []
        public init(nameservers: [String] = [], domain: String? = nil, search: [String] = [], options: [String] = []) {
            self.nameservers = nameservers; self.domain = domain; self.search = search; self.options = options
        }
        public var isEmpty: Bool { nameservers.isEmpty && domain == nil && search.isEmpty && options.isEmpty }
    }

    public var interfaces: [Interface]
    public var ips: [IPConfig]
    public var routes: [Route]
    public var dns: DNS

    public init(interfaces: [Interface] = [], ips: [IPConfig] = [], routes: [Route] = [], dns: DNS = DNS()) {
        self.interfaces = interfaces; self.ips = ips; self.routes = routes; self.dns = dns
    }
}

// MARK: - Encoding

extension Result {
    /// The result as JSON in the layout of `version`.
    public func json(version: SpecVersion) throws(CNIError) -> JSON {
        var o: [String: JSON] = ["cniVersion": .string(version.rawValue)]
        switch version.layout {
        case .legacy:
            let v4 = ips.first { $0.address.family == .v4 }
            let v6 = ips.first { $0.address.family == .v6 }
            guard v4 != nil || v6 != nil else {
                throw CNIError(.incompatibleVersion, "cannot convert: no valid IP addresses")
            }
            for (key, ip) in [("ip4", v4), ("ip6", v6)] {
                guard let ip else { continue }
                var e: [String: JSON] = ["ip": .string(ip.address.description)]
                if let gw = ip.gateway { e["gateway"] = .string(gw.description) }
                let rs = routes.filter { $0.dst.family == ip.address.family }.map { r -> JSON in
                    var ro: [String: JSON] = ["dst": .string(r.dst.description)]
                    if let gw = r.gw { ro["gw"] = .string(gw.description) }
                    return .object(ro)
                }
                if !rs.isEmpty { e["routes"] = .array(rs) }
                o[key] = .object(e)
            }
            if !dns.isEmpty { o["dns"] = dns.json }
            return .object(o)
        case .v04, .v1:
            let extended = version == .v1_1_0
            if !interfaces.isEmpty {
                o["interfaces"] = .array(interfaces.map { $0.json(extended: extended) })
            }
            if !ips.isEmpty {
                o["ips"] = .array(ips.map { $0.json(withVersion: version.layout == .v04) })
            }
            if !routes.isEmpty { o["routes"] = .array(routes.map(\.json)) }
            // Go's 0.3/0.4 types print "dns":{} even when empty; 1.x leaves it out.
            if !dns.isEmpty || version.layout == .v04 { o["dns"] = dns.json }
            return .object(o)
        }
    }
}

extension Result.Interface {
    func json(extended: Bool) -> JSON {
        var o: [String: JSON] = ["name": .string(name)]
        if let mac { o["mac"] = .string(mac) }
        if let sandbox { o["sandbox"] = .string(sandbox) }
        if extended {
            if let mtu { o["mtu"] = .int(Int64(mtu)) }
            if let socketPath { o["socketPath"] = .string(socketPath) }
            if let pciID { o["pciID"] = .string(pciID) }
        }
        return .object(o)
    }
}

extension Result.IPConfig {
    func json(withVersion: Bool) -> JSON {
        var o: [String: JSON] = ["address": .string(address.description)]
        if withVersion { o["version"] = .string(address.family == .v4 ? "4" : "6") }
        if let gateway { o["gateway"] = .string(gateway.description) }
        if let interface { o["interface"] = .int(Int64(interface)) }
        return .object(o)
    }
}

extension Result.Route {
    public var json: JSON {
        var o: [String: JSON] = ["dst": .string(dst.description)]
        if let gw { o["gw"] = .string(gw.description) }
        for (k, v) in [("mtu", mtu), ("advmss", advmss), ("priority", priority), ("table", table), ("scope", scope)] {
            if let v { o[k] = .int(Int64(v)) }
        }
        return .object(o)
    }

    /// Reads a route object (`routes` entries of a result or of an IPAM config).
    public init(json: JSON, path: String) throws(CNIError) {
        guard let o = json.objectValue else {
            throw CNIError(.invalidNetworkConfig, "invalid \(path): must be an object, got \(json.text)")
        }
        guard let d = try o.value("dst", as: String.self, path: "\(path).dst"), let dst = IPNetwork(d) else {
            throw CNIError(
                .invalidNetworkConfig, "invalid \(path).dst: \(try o.member("dst")?.value.text ?? "missing")")
        }
        self.init(dst: dst)
        if let g = try o.value("gw", as: String.self, path: "\(path).gw") {
            guard let gw = IPAddress(g) else { throw CNIError(.invalidNetworkConfig, "invalid \(path).gw: \"\(g)\"") }
            self.gw = gw
        }
        mtu = try o.value("mtu", path: "\(path).mtu")
        advmss = try o.value("advmss", path: "\(path).advmss")
        priority = try o.value("priority", path: "\(path).priority")
        table = try o.value("table", path: "\(path).table")
        scope = try o.value("scope", path: "\(path).scope")
    }
}

extension Result.DNS {
    public var json: JSON {
        var o: [String: JSON] = [:]
        if !nameservers.isEmpty { o["nameservers"] = .array(nameservers.map(JSON.string)) }
        if let domain { o["domain"] = .string(domain) }
        if !search.isEmpty { o["search"] = .array(search.map(JSON.string)) }
        if !options.isEmpty { o["options"] = .array(options.map(JSON.string)) }
        return .object(o)
    }

    public init(json: JSON?, path: String = "dns") throws(CNIError) {
        self.init()
        guard let json, !json.isNull else { return }
        guard let o = json.objectValue else {
            throw CNIError(.invalidNetworkConfig, "invalid \(path): must be an object")
        }
        nameservers = try o.value("nameservers", path: "\(path).nameservers") ?? []
        domain = try o.value("domain", path: "\(path).domain")
        search = try o.value("search", path: "\(path).search") ?? []
        options = try o.value("options", path: "\(path).options") ?? []
    }
}

// MARK: - Decoding

extension Result {
    /// Reads a result printed in any version's layout. The layout is chosen by the result's own
    /// `cniVersion`, falling back to `assumedVersion` (libcni's fixupResultVersion).
    public init(json: JSON, assumedVersion: SpecVersion) throws(CNIError) {
        guard let o = json.objectValue else {
            throw CNIError(.decodingFailure, "result is not a JSON object")
        }
        var version = assumedVersion
        if let v = try o.value("cniVersion", as: String.self), !v.isEmpty {
            guard let sv = SpecVersion(rawValue: v) else {
                throw CNIError(.incompatibleVersion, "unsupported result version \"\(v)\"")
            }
            version = sv
        }
        self.init()
        dns = try DNS(json: o.member("dns")?.value)
        switch version.layout {
        case .legacy:
            for key in ["ip4", "ip6"] {
                guard let e = try o.object(key) else { continue }
                guard let s = try e.value("ip", as: String.self, path: "\(key).ip"), let a = IPNetwork(s) else {
                    throw CNIError(.decodingFailure, "invalid \(key).ip in result")
                }
                var ip = IPConfig(address: a)
                if let g = try e.value("gateway", as: String.self) { ip.gateway = IPAddress(g) }
                ips.append(ip)
                for (i, r) in (try e.value("routes", as: [JSON].self) ?? []).enumerated() {
                    routes.append(try Route(json: r, path: "\(key).routes[\(i)]"))
                }
            }
        case .v04, .v1:
            for (i, j) in (try o.value("interfaces", as: [JSON].self) ?? []).enumerated() {
                guard let e = j.objectValue, let name = try e.value("name", as: String.self) else {
                    throw CNIError(.decodingFailure, "invalid interfaces[\(i)] in result")
                }
                interfaces.append(
                    Interface(
                        name: name, mac: try e.value("mac"), mtu: try e.value("mtu"), sandbox: try e.value("sandbox"),
                        socketPath: try e.value("socketPath"), pciID: try e.value("pciID")))
            }
            for (i, j) in (try o.value("ips", as: [JSON].self) ?? []).enumerated() {
                guard let e = j.objectValue, let s = try e.value("address", as: String.self),
                    let a = IPNetwork(s)
                else {
                    throw CNIError(.decodingFailure, "invalid ips[\(i)].address in result")
                }
                var ip = IPConfig(address: a, interface: try e.value("interface"))
                if let g = try e.value("gateway", as: String.self) {
                    guard let gw = IPAddress(g) else {
                        throw CNIError(.decodingFailure, "invalid ips[\(i)].gateway in result")
                    }
                    ip.gateway = gw
                }
                ips.append(ip)
            }
            for (i, r) in (try o.value("routes", as: [JSON].self) ?? []).enumerated() {
                routes.append(try Route(json: r, path: "routes[\(i)]"))
            }
        }
    }
}

// MARK: - Numeric ranges

extension Result.Route {
    /// The numeric fields in the widths the kernel holds them: table, priority (metric), mtu and
    /// advmss are u32 (RTA_TABLE, RTA_PRIORITY, RTAX_MTU, RTAX_ADVMSS), scope is a u8 (rtm_scope).
    public struct KernelValues: Equatable, Sendable {
        public var table: UInt32?
        public var priority: UInt32?
        public var scope: UInt8?
        public var mtu: UInt32?
        public var advmss: UInt32?
    }

    /// The numeric fields converted for the kernel, or code 7 naming the first one out of range
    /// (`path` is the route's place, e.g. "routes[0]"). Parsing a route does not check this, so
    /// that a DEL whose prevResult holds such a value (written by another implementation) still
    /// works; everything that hands a route to the kernel, or accepts one from a delegate, does.
    public func kernelValues(path: String) throws(CNIError) -> KernelValues {
        func convert<T: FixedWidthInteger>(_ value: Int?, _ field: String) throws(CNIError) -> T? {
            guard let value else { return nil }
            guard let v = T(exactly: value) else {
                throw CNIError(
                    .invalidNetworkConfig,
                    "invalid \(path).\(field): \(value) is out of range (\(T.min) to \(T.max))")
            }
            return v
        }
        return KernelValues(
            table: try convert(table, "table"), priority: try convert(priority, "priority"),
            scope: try convert(scope, "scope"), mtu: try convert(mtu, "mtu"),
            advmss: try convert(advmss, "advmss"))
    }
}

extension Result {
    /// Code 7 naming the first route field (`routes[i].priority`, ...) the kernel cannot hold.
    public func checkRouteRanges() throws(CNIError) {
        for (i, r) in routes.enumerated() { _ = try r.kernelValues(path: "routes[\(i)]") }
    }
}
