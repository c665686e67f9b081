// flanneld's command line as Go's `flag` package reads it, rewritten into the form
// swift-argument-parser reads, so that a unit, a how-to or a packaged /etc/default file written for
// flanneld starts podnetd unchanged:
//
//     flanneld -etcd-endpoints=http://10.0.0.5:2379 -iface eth0 -ip-masq          (Go)
//     podnetd --etcd-endpoints=http://10.0.0.5:2379 --iface=eth0 --ip-masq        (rewritten)
//
// Go's rules (golang.org/pkg/flag): a flag is `-name` or `--name`; a value follows as `=value` or
// as the next argument, except for a boolean, which takes only `=value` (1, 0, t, f, true, false,
// in any of Go's spellings); `--` or the first argument that is not a flag ends the flags. Then,
// as flanneld's `flagutil.SetFlagsFromEnv`, every flag not given on the command line is read from
// `FLANNELD_<NAME>` (upper case, `-` as `_`): the command line wins over the environment.
// A boolean becomes `--name` or `--no-name` (the podnetd flag declares both), so an environment
// `FLANNELD_IP_MASQ=true` and a command line `-ip-masq=false` end as flanneld ends them.

/// What podnetd's flags are, for the rewrite.
public struct GoCommandLine: Sendable {
    /// The flags that take no separate value (`-ip-masq`, `-ip-masq=false`).
    public var booleans: Set<String>
    /// Every flag podnetd has, booleans included, without dashes.
    public var flags: Set<String>
    /// flanneld flags podnetd cannot honour: given, they are an error naming them, never silently
    /// ignored, unless a boolean is given the value podnetd behaves as anyway.
    public var unsupported: [String: Unsupported]

    /// Why podnetd cannot honour a flanneld flag.
    public struct Unsupported: Sendable {
        public var reason: String
        /// For a boolean: the value that asks for what podnetd does anyway (`-kube-subnet-mgr=false`).
        public var harmless: Bool?

        public init(_ reason: String, harmless: Bool? = nil) {
            self.reason = reason
            self.harmless = harmless
        }
    }

    public init(booleans: Set<String>, flags: Set<String>, unsupported: [String: Unsupported] = [:]) {
        self.booleans = booleans.union(unsupported.filter { $0.value.harmless != nil }.keys)
        self.flags = flags.union(booleans)
        self.unsupported = unsupported
    }

    /// A command line podnetd cannot take, with Go's wording where Go has one.
    public struct Problem: Error, Equatable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Rewrites `arguments` (without the program name) and adds the flags set in `environment`.
    /// `help` and `version` pass through as `--help` and `--version`.
    public func rewrite(_ arguments: [String], environment: [String: String]) throws(Problem) -> [String] {
        var out: [String] = []
        var given: Set<String> = []
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if arg == "--" || !arg.hasPrefix("-") || arg == "-" {
                // The flags end here; what follows is no flag (podnetd takes no positional argument,
                // so the parser will say so).
                out += arguments[(i - 1)...]
                break
            }
            var body = Substring(arg.dropFirst(arg.hasPrefix("--") ? 2 : 1))
            guard !body.isEmpty, !body.hasPrefix("-"), !body.hasPrefix("=") else {
                throw Problem("bad flag syntax: \(arg)")
            }
            var value: String?
            if let eq = body.firstIndex(of: "=") {
                value = String(body[body.index(after: eq)...])
                body = body[..<eq]
            }
            let name = String(body)
            if name == "h" || name == "help" || name == "version" {
                out.append("--\(name == "h" ? "help" : name)")
                continue
            }
            given.insert(name)
            if let u = unsupported[name] {
                if let harmless = u.harmless, try Self.bool(value ?? "true", flag: name) == harmless { continue }
                throw Problem("-\(name) is not supported by podnetd: \(u.reason)")
            }
            guard flags.contains(name) else { throw Problem("flag provided but not defined: -\(name)") }
            if booleans.contains(name) {
                out.append(try Self.bool(value ?? "true", flag: name) ? "--\(name)" : "--no-\(name)")
                continue
            }
            if value == nil {
                guard i < arguments.count else { throw Problem("flag needs an argument: -\(name)") }
                value = arguments[i]
                i += 1
            }
            out.append("--\(name)=\(value!)")
        }
        var fromEnvironment: [String] = []
        for name in flags.union(unsupported.keys).sorted() where !given.contains(name) {
            guard let value = environment[Self.environmentName(name)] else { continue }
            if let u = unsupported[name] {
                if let harmless = u.harmless, try Self.bool(value, flag: name) == harmless { continue }
                throw Problem(
                    "\(Self.environmentName(name)) is set, but -\(name) is not supported by podnetd: \(u.reason)")
            }
            if booleans.contains(name) {
                fromEnvironment.append(try Self.bool(value, flag: name) ? "--\(name)" : "--no-\(name)")
            } else {
                fromEnvironment.append("--\(name)=\(value)")
            }
        }
        return fromEnvironment + out
    }

    /// `FLANNELD_<NAME>`: the flag's name upper-cased, `-` as `_` (flagutil.SetFlagsFromEnv).
    public static func environmentName(_ flag: String) -> String {
        "FLANNELD_" + flag.uppercased().replacing("-", with: "_")
    }

    /// A boolean as Go's strconv.ParseBool reads it.
    static func bool(_ text: String, flag: String) throws(Problem) -> Bool {
        switch text {
        case "1", "t", "T", "true", "TRUE", "True": return true
        case "0", "f", "F", "false", "FALSE", "False": return false
        default: throw Problem("invalid boolean value \"\(text)\" for -\(flag)")
        }
    }
}

extension GoCommandLine {
    /// podnetd's flags (Podnetd.swift declares each), and flanneld's that it cannot honour.
    public static let podnetd = GoCommandLine(
        booleans: [
            "ip-masq", "ip-masq-fully-random-disable", "iptables-forward-rules", "ip-blackhole-route",
            "exit-on-lease-loss",
        ],
        flags: [
            "etcd-endpoints", "etcd-prefix", "etcd-cafile", "etcd-certfile", "etcd-keyfile", "etcd-username",
            "etcd-password", "iface", "iface-regex", "iface-can-reach", "public-ip", "public-ipv6", "subnet-file",
            "subnet-lease-renew-margin", "iptables-resync",
            "healthz-ip", "healthz-port", "healthz-max-connections", "healthz-idle-timeout",
            "healthz-header-timeout", "reconcile-interval", "v",
        ],
        unsupported: [
            "kube-subnet-mgr": .init("podnetd reads leases from etcd only", harmless: false),
            "kube-api-url": .init("podnetd reads leases from etcd only"),
            "kubeconfig-file": .init("podnetd reads leases from etcd only"),
            "kube-annotation-prefix": .init("podnetd reads leases from etcd only"),
            "net-config-path": .init("podnetd reads the network config from etcd (<etcd-prefix>/config)"),
            "vmodule": .init("podnetd logs through swift-log; use -v"),
            "log_backtrace_at": .init("podnetd logs through swift-log; use -v"),
        ])
}
