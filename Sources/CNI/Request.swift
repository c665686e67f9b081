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
    public var type: String { config["type"]?.stringValue ?? "" }
    public var runtimeConfig: [String: JSON] { config["runtimeConfig"]?.objectValue ?? [:] }
    public var ipam: [String: JSON]? { config["ipam"]?.objectValue }
    /// The IPAM plugin's type, or nil when the config has no IPAM section (L2-only).
    public var ipamType: String? { ipam?["type"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } }

    /// Parses and validates the configuration, in the reference's order: JSON (code 6), network
    /// name (code 7), version (code 1), verb allowed by the version (code 1).
    public init(env: CNIEnvironment, stdin: [UInt8], supported: [SpecVersion]) throws(CNIError) {
        self.env = env
        self.stdin = stdin
        guard let config = try JSON.parse(stdin).objectValue else {
            throw CNIError(.decodingFailure, "network configuration is not a JSON object")
        }
        self.config = config
        let name = try config.value("name", as: String.self) ?? ""
        if name.isEmpty { throw CNIError(.invalidNetworkConfig, "missing network name") }
        guard CNIEnvironment.isValidName(name) else {
            throw CNIError(.invalidNetworkConfig, "invalid characters found in network name", details: name)
        }
        self.name = name
        // A missing cniVersion decodes as 0.1.0 (pkg/types/create DecodeVersion).
        let v = try config.value("cniVersion", as: String.self) ?? ""
        guard let version = SpecVersion(rawValue: v.isEmpty ? "0.1.0" : v), supported.contains(version) else {
            throw CNIError(.incompatibleVersion, "incompatible CNI versions",
                           details: "config is \"\(v)\", plugin supports \(supported.map { "\"\($0.rawValue)\"" })")
        }
        self.version = version
        guard version >= SpecVersion.minimum(for: env.command) else {
            throw CNIError(.incompatibleVersion, "config version does not allow \(env.command.rawValue)")
        }
        if let p = config["prevResult"], !p.isNull {
            prevResult = try Result(json: p, assumedVersion: version)
        } else {
            prevResult = nil
        }
    }

    /// GC's list of attachments still in use: `cni.dev/valid-attachments`, or the spec-v1.1.0
    /// spelling `cni.dev/attachments`. Nil when neither key is present (then GC removes nothing).
    public var validAttachments: Set<Attachment>? {
        get throws(CNIError) {
            guard let list = config["cni.dev/valid-attachments"] ?? config["cni.dev/attachments"] else { return nil }
            guard let a = list.arrayValue else {
                throw CNIError(.invalidNetworkConfig, "cni.dev/valid-attachments must be a list")
            }
            var out = Set<Attachment>()
            for e in a {
                guard let o = e.objectValue, let id = o["containerID"]?.stringValue, let ifn = o["ifname"]?.stringValue else {
                    throw CNIError(.invalidNetworkConfig, "invalid entry in cni.dev/valid-attachments: \(e.text)")
                }
                out.insert(Attachment(containerID: id, ifname: ifn))
            }
            return out
        }
    }
}

/// An attachment, as the spec identifies it: (CNI_CONTAINERID, CNI_IFNAME).
public struct Attachment: Hashable, Sendable {
    public var containerID: String
    public var ifname: String
    public init(containerID: String, ifname: String) {
        self.containerID = containerID
        self.ifname = ifname
    }
}
