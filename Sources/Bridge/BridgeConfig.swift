// The bridge plugin's configuration (reference plugins/main/bridge NetConf), validated in full
// before ADD touches anything on the host.

import Addressing
import CNI

public struct BridgeConfig: Sendable {
    public var bridge = "cni0"
    public var isGateway = false
    public var isDefaultGateway = false
    public var forceAddress = false
    public var ipMasq = false
    /// "iptables", "nftables", or nil for the reference's automatic choice.
    public var ipMasqBackend: String?
    public var mtu: Int?
    public var hairpinMode = false
    public var promiscMode = false
    public var enabledad = false
    public var disableContainerInterface = false
    public var portIsolation = false
    /// The container interface's MAC: CNI_ARGS MAC, then args.cni.mac, then runtimeConfig.mac.
    public var mac: MACAddress?
    public var dns: Result.DNS

    /// Keys of the reference that podnet does not implement. A non-default value fails with code 2
    /// (unsupported field) naming the key, rather than being silently ignored.
    static let unimplemented: [(key: String, isDefault: @Sendable (JSON) -> Bool)] = [
        ("vlan", { Int(json: $0) == 0 }),  // 0 also written as 0.0, which parses as a double
        ("vlanTrunk", { $0.arrayValue?.isEmpty ?? false }),
        ("preserveDefaultVlan", { _ in true }),  // only meaningful with vlan or vlanTrunk
        ("macspoofchk", { $0 == .bool(false) }),
    ]

    public init(_ request: Request) throws(CNIError) {
        let c = request.config
        for (key, isDefault) in Self.unimplemented {
            if let (path, v) = try c.member(key), !isDefault(v) {
                throw CNIError(
                    .unsupportedField, "bridge: \"\(path)\" is not supported by podnet",
                    details: "\(path)=\(v.text)")
            }
        }
        if let b = try c.value("bridge", as: String.self), !b.isEmpty {
            do { try CNIEnvironment.validateInterfaceName(b) } catch {
                throw CNIError(.invalidNetworkConfig, "invalid bridge name \"\(b)\": \(error.msg)")
            }
            bridge = b
        }
        isDefaultGateway = try c.value("isDefaultGateway") ?? false
        isGateway = try c.value("isGateway") ?? false || isDefaultGateway
        forceAddress = try c.value("forceAddress") ?? false
        ipMasq = try c.value("ipMasq") ?? false
        if let b = try c.value("ipMasqBackend", as: String.self), !b.isEmpty {
            guard b == "iptables" || b == "nftables" else {
                throw CNIError(.invalidNetworkConfig, "unknown ipmasq backend \"\(b)\"")
            }
            ipMasqBackend = b
        }
        if let m = try c.value("mtu", as: Int.self), m != 0 {
            guard (68...65535).contains(m) else {
                throw CNIError(.invalidNetworkConfig, "invalid mtu \(m): must be between 68 and 65535")
            }
            mtu = m
        }
        hairpinMode = try c.value("hairpinMode") ?? false
        promiscMode = try c.value("promiscMode") ?? false
        if hairpinMode && promiscMode {
            throw CNIError(.invalidNetworkConfig, "cannot set hairpin mode and promiscuous mode at the same time")
        }
        enabledad = try c.value("enabledad") ?? false
        disableContainerInterface = try c.value("disableContainerInterface") ?? false
        if disableContainerInterface && request.ipamType != nil {
            throw CNIError(.invalidNetworkConfig, "cannot use IPAM when DisableContainerInterface flag is set")
        }
        portIsolation = try c.value("portIsolation") ?? false
        dns = try Result.DNS(json: c.member("dns")?.value)

        var macText = request.command == .add ? try request.env.arg("MAC", known: ["MAC", "IP"]) : nil
        if let m = try c.object("args")?.object("cni", path: "args.cni")?.value(
            "mac", as: String.self, path: "args.cni.mac")
        {
            macText = m
        }
        if let m = try request.runtimeConfig.value("mac", as: String.self, path: "runtimeConfig.mac") { macText = m }
        if let t = macText {
            guard let m = MACAddress(t) else { throw CNIError(.invalidNetworkConfig, "invalid MAC address \"\(t)\"") }
            mac = m
        }
    }
}
