// Errors of the etcd client. Each names the request (the gateway path, e.g. `/v3/kv/put`) and the
// endpoint it failed on, so a log line or a metric label says where to look.

/// A gRPC status code, as etcd's gateway reports it (`"code":5` in a unary error, `grpc_code` in a
/// stream). The HTTP status is derived from it, so the code is what callers match on.
public struct GRPCStatusCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let cancelled = Self(rawValue: 1)
    public static let unknown = Self(rawValue: 2)
    /// Bad request: `key is not provided`, bad base64, `user name is empty`, wrong password.
    public static let invalidArgument = Self(rawValue: 3)
    public static let deadlineExceeded = Self(rawValue: 4)
    /// `requested lease not found`: revoking, or putting with, an unknown or expired lease.
    public static let notFound = Self(rawValue: 5)
    public static let alreadyExists = Self(rawValue: 6)
    /// The user's role does not grant the key.
    public static let permissionDenied = Self(rawValue: 7)
    public static let resourceExhausted = Self(rawValue: 8)
    /// For example `authentication is not enabled`.
    public static let failedPrecondition = Self(rawValue: 9)
    /// `mvcc: required revision has been compacted` (a range at a compacted revision).
    public static let outOfRange = Self(rawValue: 11)
    public static let unimplemented = Self(rawValue: 12)
    public static let `internal` = Self(rawValue: 13)
    /// The gateway could not reach its own gRPC server, or the server is shutting down.
    public static let unavailable = Self(rawValue: 14)
    /// `invalid auth token`: the token expired; the client re-authenticates once and retries.
    public static let unauthenticated = Self(rawValue: 16)

    public var description: String {
        let names = [
            1: "Canceled", 2: "Unknown", 3: "InvalidArgument", 4: "DeadlineExceeded", 5: "NotFound",
            6: "AlreadyExists", 7: "PermissionDenied", 8: "ResourceExhausted", 9: "FailedPrecondition",
            10: "Aborted", 11: "OutOfRange", 12: "Unimplemented", 13: "Internal", 14: "Unavailable",
            15: "DataLoss", 16: "Unauthenticated",
        ]
        return "\(names[rawValue] ?? "code") (\(rawValue))"
    }
}

/// Why an etcd request failed.
///
/// `request` is the gateway path (`/v3/kv/range`), `endpoint` the base URL it was sent to.
/// ``unavailable(request:failures:)`` means no endpoint answered and nothing was done, so the request
/// is safe to retry; the other cases are what one endpoint answered or how it failed.
public indirect enum EtcdError: Error, Sendable, CustomStringConvertible {
    /// etcd answered with an error: `code` is the gRPC status code, `message` etcd's text
    /// (`etcdserver: requested lease not found`).
    case server(code: GRPCStatusCode, message: String, request: String, endpoint: String)
    /// The connection could not be made or broke (refused, reset, closed mid-response).
    case connection(reason: String, request: String, endpoint: String)
    /// The TLS handshake failed: wrong CA, missing or rejected client certificate, name mismatch.
    case tls(reason: String, request: String, endpoint: String)
    /// The endpoint did not answer within the request timeout.
    case timeout(after: Duration, request: String, endpoint: String)
    /// Every endpoint was tried and none answered; one failure per endpoint, in the order tried.
    case unavailable(request: String, failures: [EtcdError])
    /// The username or password was refused (or the user does not exist).
    case authenticationFailed(user: String, message: String, endpoint: String)
    /// The answer was not the JSON etcd sends.
    case malformedResponse(reason: String, request: String, endpoint: String)
    /// A keepalive found the lease gone: it expired or was revoked.
    case leaseExpired(LeaseID)
    /// The server cancelled a watch for a reason other than compaction (e.g. permission denied).
    case watchCanceled(reason: String, endpoint: String)
    /// The client's configuration cannot work (an unreadable certificate file, a bad endpoint URL).
    case invalidConfiguration(String)
    /// The calling task was cancelled.
    case cancelled

    /// True for etcd's `required revision has been compacted`: re-list at the current revision.
    public var isCompacted: Bool {
        if case .server(.outOfRange, let message, _, _) = self { return message.contains("compacted") }
        return false
    }

    /// True when a lease is unknown to etcd: expired, revoked, or never granted.
    public var isLeaseNotFound: Bool {
        switch self {
        case .leaseExpired: true
        case .server(.notFound, let message, _, _): message.contains("lease")
        default: false
        }
    }

    /// True when no endpoint could be reached (a network or server outage rather than a refusal).
    public var isUnavailable: Bool {
        if case .unavailable = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .server(let code, let message, let request, let endpoint):
            "etcd \(request) on \(endpoint): \(message) [\(code)]"
        case .connection(let reason, let request, let endpoint):
            "etcd \(request) on \(endpoint): connection failed: \(reason)"
        case .tls(let reason, let request, let endpoint):
            "etcd \(request) on \(endpoint): TLS handshake failed: \(reason)"
                + " (check the CA file and the client certificate and key)"
        case .timeout(let after, let request, let endpoint):
            "etcd \(request) on \(endpoint): no answer within \(after)"
        case .unavailable(let request, let failures):
            "etcd \(request): no endpoint answered: "
                + failures.map { $0.endpointSummary }.joined(separator: "; ")
        case .authenticationFailed(let user, let message, let endpoint):
            "etcd authentication of user \"\(user)\" on \(endpoint) failed: \(message)"
        case .malformedResponse(let reason, let request, let endpoint):
            "etcd \(request) on \(endpoint): unexpected response: \(reason)"
        case .leaseExpired(let id):
            "etcd lease \(id) has expired or was revoked"
        case .watchCanceled(let reason, let endpoint):
            "etcd watch on \(endpoint) cancelled by the server: \(reason)"
        case .invalidConfiguration(let reason):
            "etcd client configuration: \(reason)"
        case .cancelled:
            "etcd request cancelled"
        }
    }

    /// One failure of ``unavailable(request:failures:)``, without repeating the request.
    private var endpointSummary: String {
        switch self {
        case .server(let code, let message, _, let endpoint): "\(endpoint): \(message) [\(code)]"
        case .connection(let reason, _, let endpoint): "\(endpoint): connection failed: \(reason)"
        case .tls(let reason, _, let endpoint):
            "\(endpoint): TLS handshake failed: \(reason)"
                + " (check the CA file and the client certificate and key)"
        case .timeout(let after, _, let endpoint): "\(endpoint): no answer within \(after)"
        default: description
        }
    }
}
