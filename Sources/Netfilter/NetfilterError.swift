// Errors of the Netfilter library: which command or netlink operation failed and why.

import Netlink

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public enum NetfilterError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `ipMasqBackend` named something other than "iptables" or "nftables".
    case unknownBackend(String)
    /// The command could not be started (not installed, not executable); `errno` from posix_spawn.
    case launchFailed(command: String, errno: Int32)
    /// The command ran longer than the runner's timeout and was killed.
    case timedOut(command: String, seconds: Double)
    /// The command exited non-zero; `stderr` is what it printed, trimmed.
    case commandFailed(command: String, status: Int32, stderr: String)
    /// nftables over netlink failed: the kernel's error for the operation that caused it
    /// (`NFT_MSG_NEWRULE inet cni_plugins_masquerade masq_checks: Operation not supported`).
    case netlink(NetlinkError)
    /// Several independent steps failed (teardown and GC try every backend and family).
    case multiple([NetfilterError])

    public var description: String {
        switch self {
        case .unknownBackend(let name):
            return "unknown ipmasq backend \"\(name)\""
        case .launchFailed(let command, let errno):
            return "failed to run \(command): \(String(cString: strerror(errno)))"
        case .timedOut(let command, let seconds):
            return "\(command) did not finish within \(seconds)s"
        case .commandFailed(let command, let status, let stderr):
            return "\(command) failed (exit status \(status)): \(stderr)"
        case .netlink(let error):
            return "nftables: \(error)"
        case .multiple(let errors):
            return errors.map(\.description).joined(separator: "\n")
        }
    }

    /// One error for a list of them: nil when empty, the error itself when alone.
    static func joined(_ errors: [NetfilterError]) -> NetfilterError? {
        switch errors.count {
        case 0: return nil
        case 1: return errors[0]
        default: return .multiple(errors.flatMap { if case .multiple(let e) = $0 { e } else { [$0] } })
        }
    }
}
