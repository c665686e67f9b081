// The flannel plugin's own keys, and the delegate configuration built from them and subnet.env
// exactly as flannel-io/cni-plugin builds it (doCmdAdd, getDelegateIPAM):
//
//   name        the flannel network's name, always
//   type        "bridge" unless `delegate.type` is set
//   ipMasq      !FLANNEL_IPMASQ unless set: when flanneld masquerades, the bridge must not
//   mtu         FLANNEL_MTU unless set
//   isGateway   true for a bridge unless set
//   cniVersion  the flannel config's, when it has one
//   ipam        the flannel `ipam` object (default type host-local) with `ranges` replaced by one
//               range set per family present (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET) and `routes`
//               = ipam.routes followed by one route per FLANNEL_NETWORK, then FLANNEL_IPV6_NETWORK
//   runtimeConfig  the flannel runtimeConfig, as it is
//
// Every other key of `delegate` passes through; `delegate` must not hold `name` or `ipam`.

import CNI

public struct FlannelConfig: Sendable {
    public static let defaultDataDir = "/var/lib/cni/flannel"

    public var name: String
    /// The config's cniVersion, nil when it had none (the delegate then gets none either).
    public var cniVersion: String?
    public var subnetFile = SubnetEnv.defaultPath
    public var dataDir = Self.defaultDataDir
    public var delegate: [String: JSON] = [:]
    public var ipam: [String: JSON]?
    public var runtimeConfig: [String: JSON]?

    /// Reads the keys; the delegate section is validated only when a delegate config is built, so
    /// DEL works from `dataDir` alone, as the reference's does.
    public init(_ request: Request) throws(CNIError) {
        let c = request.config
        name = request.name
        cniVersion = try c.value("cniVersion", as: String.self).flatMap { $0.isEmpty ? nil : $0 }
        // An empty string means the default (the reference would try to open "").
        if let f = try c.value("subnetFile", as: String.self), !f.isEmpty { subnetFile = f }
        if let d = try c.value("dataDir", as: String.self), !d.isEmpty { dataDir = d }
        delegate = try c.object("delegate") ?? [:]
        ipam = try c.object("ipam")
        runtimeConfig = try c.object("runtimeConfig")
    }

    public var store: SavedConfigStore { SavedConfigStore(directory: dataDir) }

    /// The delegate's config. With `subnets` nil (GC, or DEL of a damaged saved file while
    /// subnet.env is missing) the keys that come from subnet.env are left out: ipMasq, mtu,
    /// ipam.ranges and the FLANNEL_NETWORK routes.
    public func delegateConfig(_ subnets: SubnetEnv?) throws(CNIError) -> [String: JSON] {
        var d = delegate
        if let t = d["type"], t.stringValue == nil {
            throw CNIError(.invalidNetworkConfig, "'delegate' dictionary, if present, must have (string) 'type' field")
        }
        for key in ["name", "ipam"] where d[key] != nil {
            throw CNIError(
                .invalidNetworkConfig, "'delegate' dictionary must not have '\(key)' field, it'll be set by flannel")
        }
        if let runtimeConfig { d["runtimeConfig"] = .object(runtimeConfig) }
        d["name"] = .string(name)
        if d["type"] == nil { d["type"] = .string("bridge") }
        if let subnets {
            if d["ipMasq"] == nil { d["ipMasq"] = .bool(!subnets.ipMasq) }
            if d["mtu"] == nil { d["mtu"] = .int(Int64(subnets.mtu)) }
        }
        if d["type"] == .string("bridge") && d["isGateway"] == nil { d["isGateway"] = .bool(true) }
        if let cniVersion { d["cniVersion"] = .string(cniVersion) }
        d["ipam"] = .object(try delegateIPAM(subnets))
        return d
    }

    func delegateIPAM(_ subnets: SubnetEnv?) throws(CNIError) -> [String: JSON] {
        var ipam = self.ipam ?? [:]
        if ipam["type"] == nil { ipam["type"] = .string("host-local") }
        // Read and re-written as the reference does (types.Route): invalid routes are an error and
        // unknown keys are dropped. `ipam` is a Go map in the reference, so its key `routes` is
        // matched exactly (hasKey); the keys inside each route are a struct's, matched as Go does.
        var routes: [JSON] = []
        let given = ipam["routes"].flatMap { $0.isNull ? nil : $0 }
        if let given, given.arrayValue == nil {
            throw CNIError(.invalidNetworkConfig, "invalid config: \"ipam.routes\" must be a list, got \(given.text)")
        }
        for (i, r) in (given?.arrayValue ?? []).enumerated() {
            routes.append(try Result.Route(json: r, path: "ipam.routes[\(i)]").json)
        }
        if let subnets {
            ipam["ranges"] = .array(
                [subnets.subnet, subnets.ipv6Subnet].compactMap { s in
                    s.map { JSON.array([.object(["subnet": .string($0.description)])]) }
                })
            for n in subnets.networks + subnets.ipv6Networks { routes.append(Result.Route(dst: n).json) }
        } else {
            ipam["ranges"] = nil
        }
        ipam["routes"] = .array(routes)
        return ipam
    }
}

extension [String: JSON] {
    /// The delegate's plugin type (`type`), validated by `delegateConfig`.
    var pluginType: String { self["type"]?.stringValue ?? "" }
}
