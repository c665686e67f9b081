// One CNI invocation: the validated environment plus the network configuration from stdin.

import Addressing

public struct Request: Sendable {
    public let env: CNIEnvironment
    /// The configuration bytes exactly as received; delegates get them unchanged.
    public let stdin: [UInt8]
    /// The configuration as a JSON object.
    public let config: [String: JSON]
    /// The configuration's `cniVersion`; results are printed in this version.
    public let version: SpecVersion
    public let name: String
    /// `prevResult` (chained ADD; DEL and CHECK for configs >= 0.4.0), read in the config's version.
    public let prevResult: Result?

    public var command: Command { env.command }
    /// The plugin's `type`; "" when absent.
    public let type: String
    /// `runtimeConfig`; empty when absent.
    public let runtimeConfig: [String: JSON]
    /// The `ipam` section, nil when absent.
    public let ipam: [String: JSON]?
    /// The IPAM plugin's type, or nil when the config has no IPAM section (L2-only).
    public let ipamType: String?

    /// Parses and validates the configuration, in the reference's order: JSON (code 6), network
    /// name (code 6 when not a string, as the skel's decode; code 7 when missing or invalid),
    /// version (code 6 when not a string, code 1 when unsupported), verb allowed by the version
    /// (code 1), then the keys every reference plugin decodes (`types.NetConf`: type,
    /// capabilities, ipam, dns, prevResult; and runtimeConfig and args): code 7 naming the key
    /// when one has the wrong type. Keys are matched as Go's encoding/json matches them.
    public init(env: CNIEnvironment, stdin: [UInt8], supported: [SpecVersion]) throws(CNIError) {
        self.env = env
        self.stdin = stdin
        let parsed = try JSON.parse(stdin)
        // `null` decodes into Go's config struct as nothing at all: "missing network name" below.
        guard let config = parsed.isNull ? [:] : parsed.objectValue else {
            throw CNIError(.decodingFailure, "network configuration is not a JSON object")
        }
        self.config = config
        let name = try Self.skelString("name", in: config)
        if name.isEmpty { throw CNIError(.invalidNetworkConfig, "missing network name") }
        guard CNIEnvironment.isValidName(name) else {
            throw CNIError(.invalidNetworkConfig, "invalid characters found in network name", details: name)
        }
        self.name = name
        // A missing cniVersion decodes as 0.1.0 (pkg/types/create DecodeVersion).
        let v = try Self.skelString("cniVersion", in: config)
        guard let version = SpecVersion(rawValue: v.isEmpty ? "0.1.0" : v), supported.contains(version) else {
            // Go's details: fmt.Sprintf("config is %q, plugin supports %q", config, supported).
            throw CNIError(
                .incompatibleVersion, "incompatible CNI versions",
                details:
                    "config is \(goQuote(v)), plugin supports [\(supported.map { goQuote($0.rawValue) }.joined(separator: " "))]"
            )
        }
        self.version = version
        guard version >= SpecVersion.minimum(for: env.command) else {
            throw CNIError(.incompatibleVersion, "config version does not allow \(env.command.rawValue)")
        }
        type = try config.value("type", as: String.self) ?? ""
        if let caps = try config.object("capabilities") {
            for key in caps.keys { _ = try caps.value(key, as: Bool.self, path: "capabilities.\(key)") }
        }
        let ipam = try config.object("ipam")
        self.ipam = ipam
        ipamType = try ipam?.value("type", as: String.self, path: "ipam.type").flatMap { $0.isEmpty ? nil : $0 }
        _ = try Result.DNS(json: config.member("dns")?.value)
        runtimeConfig = try config.object("runtimeConfig") ?? [:]
        _ = try config.object("args")
        if let p = try config.object("prevResult") {
            prevResult = try Result(json: .object(p), assumedVersion: version)
        } else {
            prevResult = nil
        }
    }

    /// A string the skel decodes itself (`name`, `cniVersion`): a value of another type fails
    /// json.Unmarshal there, which is code 6. Absent or null is "".
    private static func skelString(_ key: String, in config: [String: JSON]) throws(CNIError) -> String {
        guard let (path, v) = try config.member(key) else { return "" }
        guard let s = v.stringValue else {
            throw CNIError(
                .decodingFailure, "error unmarshall network config: \"\(path)\" must be a string, got \(v.text)")
        }
        return s
    }

    /// GC's list of attachments still in use: `cni.dev/valid-attachments`, or the spec-v1.1.0
    /// spelling `cni.dev/attachments`. Nil when neither key is present (then GC removes nothing).
    public var validAttachments: Set<Attachment>? {
        get throws(CNIError) {
            let key =
                try config.member("cni.dev/valid-attachments") != nil
                ? "cni.dev/valid-attachments" : "cni.dev/attachments"
            guard let list = try config.value(key, as: [JSON].self) else { return nil }
            var out = Set<Attachment>()
            for (i, e) in list.enumerated() {
                let path = "\(key)[\(i)]"
                guard let o = e.objectValue,
                    let id = try o.value("containerID", as: String.self, path: "\(path).containerID"),
                    let ifn = try o.value("ifname", as: String.self, path: "\(path).ifname")
                else {
                    throw CNIError(.invalidNetworkConfig, "invalid entry in \(key): \(e.text)")
                }
                out.insert(Attachment(containerID: id, ifname: ifn))
            }
            return out
        }
    }
}

/// A string as Go's %q prints it (strconv.Quote): in double quotes, with `"`, `\` and
/// control characters escaped.
func goQuote(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20 || u.value == 0x7F:
            let hex = String(u.value, radix: 16)
            out += "\\x" + (hex.count < 2 ? "0" : "") + hex
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// An attachment, as the spec identifies it: (CNI_CONTAINERID, CNI_IFNAME). Defined in
/// Addressing, which Netfilter shares, so GC hands its valid attachments to the masquerade rules
/// as they are.
public typealias Attachment = Addressing.Attachment
