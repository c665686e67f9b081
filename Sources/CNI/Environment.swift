// The CNI_* environment, validated before a plugin touches anything on the host.

/// The parameters a runtime passes in the environment (SPEC.md §2 "Parameters").
public struct CNIEnvironment: Sendable {
    public var command: Command
    /// Empty for GC and STATUS, where libcni sends empty strings.
    public var containerID: String
    /// The network namespace path; may be empty on DEL.
    public var netns: String
    public var ifname: String
    /// `CNI_ARGS` as ordered pairs.
    public var args: [(key: String, value: String)]
    public var path: [String]
    /// The whole process environment, inherited by delegates.
    public var raw: [String: String]

    /// Validates the environment for the command named by `CNI_COMMAND`.
    /// Missing variables: code 4 naming all of them; a bad container ID or ifname: code 4 (an
    /// empty container ID for GC/STATUS is allowed, since libcni sends empty strings there).
    public init(_ env: [String: String]) throws(CNIError) {
        let name = env["CNI_COMMAND"] ?? ""
        guard let command = Command(rawValue: name) else {
            throw CNIError(.invalidEnvironment, "unknown CNI_COMMAND: \(name)")
        }
        self.command = command
        raw = env
        let required: [String] =
            switch command {
            case .add, .check: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            case .del: ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]
            case .gc, .status: ["CNI_PATH"]
            case .version: []
            }
        let missing = required.filter { (env[$0] ?? "").isEmpty }
        if !missing.isEmpty {
            throw CNIError(.invalidEnvironment, "required env variables [\(missing.joined(separator: ","))] missing")
        }
        containerID = env["CNI_CONTAINERID"] ?? ""
        netns = env["CNI_NETNS"] ?? ""
        ifname = env["CNI_IFNAME"] ?? ""
        path = (env["CNI_PATH"] ?? "").split(separator: ":").map(String.init)
        args = []
        if command == .version { return }
        if !containerID.isEmpty || required.contains("CNI_CONTAINERID") {
            try Self.validateContainerID(containerID)
        }
        if !ifname.isEmpty || required.contains("CNI_IFNAME") {
            // DEL accepts "%" as Go does: no ADD of such a name succeeds, and a DEL that failed
            // here would keep the runtime from releasing what an older ADD reserved under it.
            try Self.validateInterfaceName(ifname, allowPercent: command == .del)
        }
        if !netns.isEmpty && !netns.hasPrefix("/") {
            throw CNIError(.invalidEnvironment, "CNI_NETNS must be an absolute path", details: netns)
        }
        args = try Self.parseArgs(env["CNI_ARGS"] ?? "")
    }

    /// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (pkg/utils ValidateContainerID). The same rule keeps a
    /// container ID from escaping a directory when it becomes a file name.
    public static func validateContainerID(_ id: String) throws(CNIError) {
        if id.isEmpty { throw CNIError(.unknownContainer, "missing containerID") }
        guard isValidName(id) else {
            throw CNIError(.invalidEnvironment, "invalid characters in containerID", details: id)
        }
    }

    /// The check behind container IDs and network names.
    public static func isValidName(_ s: String) -> Bool {
        let u = Array(s.utf8)
        func alnum(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
        guard let f = u.first, alnum(f) else { return false }
        return u.allSatisfy {
            alnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
        }
    }

    /// At most 15 bytes, not "." or "..", no "/", ":" or whitespace (ValidateInterfaceName), and,
    /// beyond Go's rules, no "%" unless `allowPercent`: the kernel treats a name with "%" as a
    /// pattern ("eth%d" becomes the first free eth0, eth1, ...), so the interface created would
    /// not be the one asked for, and nothing could find it by its name afterwards.
    public static func validateInterfaceName(_ name: String, allowPercent: Bool = false) throws(CNIError) {
        if name.isEmpty { throw CNIError(.invalidEnvironment, "interface name is empty") }
        if name.utf8.count > 15 {
            throw CNIError(
                .invalidEnvironment, "interface name is too long",
                details: "interface name should be less than 16 characters")
        }
        if name == "." || name == ".." {
            throw CNIError(.invalidEnvironment, "interface name is . or ..")
        }
        for c in name.unicodeScalars where c == "/" || c == ":" || c.properties.isWhitespace {
            throw CNIError(
                .invalidEnvironment, "interface name contains / or : or whitespace characters",
                details: name)
        }
        if !allowPercent && name.contains("%") {
            throw CNIError(.invalidEnvironment, "interface name contains %", details: name)
        }
    }

    /// Splits `K=V;K2=V2`. A pair without exactly one `=` is code 4.
    static func parseArgs(_ s: String) throws(CNIError) -> [(key: String, value: String)] {
        var out: [(key: String, value: String)] = []
        for pair in s.split(separator: ";") where !pair.isEmpty {
            let kv = pair.split(separator: "=", omittingEmptySubsequences: false)
            guard kv.count == 2 else {
                throw CNIError(.invalidEnvironment, "ARGS: invalid pair \"\(pair)\"")
            }
            out.append((String(kv[0]), String(kv[1])))
        }
        return out
    }

    /// The value of CNI_ARGS key `key`. As in Go's types.LoadArgs, keys the plugin does not know
    /// (`known`) are an error unless `IgnoreUnknown` is 1/true/True.
    public func arg(_ key: String, known: Set<String>) throws(CNIError) -> String? {
        let ignore = args.contains { $0.key == "IgnoreUnknown" && ["1", "true", "True"].contains($0.value) }
        if !ignore, let bad = args.first(where: { !known.contains($0.key) && $0.key != "IgnoreUnknown" }) {
            throw CNIError(.invalidEnvironment, "ARGS: unknown args [\"\(bad.key)\"]")
        }
        return args.last { $0.key == key }?.value
    }
}
