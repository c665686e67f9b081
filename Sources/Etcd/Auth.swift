// Username/password authentication. etcd exchanges them for a token (`/v3/auth/authenticate`)
// that goes in the `Authorization` header, bare (`Authorization: Bearer <t>` is refused). Simple
// tokens expire after `--auth-token-ttl` of disuse (300 s by default); etcd then answers
// `invalid auth token` (code 16), and the transport asks for a new token and retries once.

/// Holds the current token. Requests that find none while another one is authenticating wait for
/// that one's token instead of asking for their own.
actor Authenticator {
    let credentials: EtcdClient.Credentials
    private var token: String?
    private var pending: Task<String?, any Error>?
    /// The server said auth is not enabled: send no token until a request says otherwise.
    private var disabledOnServer = false

    init(credentials: EtcdClient.Credentials) {
        self.credentials = credentials
    }

    /// The token to send to `endpoint`, authenticating there first when there is none.
    /// `nil` when the server does not have auth enabled.
    func token(on endpoint: String, transport: Transport) async throws(AttemptFailure) -> String? {
        if let token { return token }
        if disabledOnServer { return nil }
        let task: Task<String?, any Error>
        if let pending {
            task = pending
        } else {
            task = Task { try await self.authenticate(on: endpoint, transport: transport) }
            pending = task
        }
        do {
            let fresh = try await task.value
            if pending == task {
                pending = nil
                if let fresh { token = fresh } else { disabledOnServer = true }
            }
            return fresh
        } catch {
            if pending == task { pending = nil }
            let request = transport.configuration.basePath + "/auth/authenticate"
            throw error as? AttemptFailure ?? transport.classify(error, request, endpoint)
        }
    }

    /// Forgets `stale` (the token a request was refused with), unless another request already
    /// replaced it.
    func invalidate(_ stale: String?) {
        if token == stale { token = nil }
        disabledOnServer = false
    }

    private func authenticate(on endpoint: String, transport: Transport) async throws -> String? {
        let path = "/auth/authenticate"
        let body = EtcdRequest.authenticate(name: credentials.username, password: credentials.password)
        let (status, bytes) = try await transport.send(endpoint, path, body, token: nil)
        if status == 200 {
            do {
                let token = try decodeWire(AuthenticateWire.self, from: bytes.readableBytesView).token
                transport.count { $0.authentications += 1 }
                transport.logger.debug(
                    "etcd authenticated",
                    metadata: [
                        "etcd.endpoint": "\(endpoint)",
                        "etcd.user": "\(credentials.username)",
                    ])
                return token
            } catch {
                throw AttemptFailure(error: transport.malformed(error, bytes, path, endpoint), nothingSent: false)
            }
        }
        let error = transport.serverError(status: status, bytes, path, endpoint)
        guard case .server(let code, let message, _, _) = error else {
            throw AttemptFailure(error: error, nothingSent: false)
        }
        switch code {
        case .failedPrecondition where message.contains("not enabled"):
            // etcd's own client carries on without a token here; so do we.
            transport.logger.debug(
                "etcd has no auth enabled; sending no token",
                metadata: ["etcd.endpoint": "\(endpoint)"])
            return nil
        case .invalidArgument where message.contains("authentication failed"):
            throw AttemptFailure(
                error: .authenticationFailed(
                    user: credentials.username, message: message,
                    endpoint: endpoint), nothingSent: false)
        default:
            throw AttemptFailure(error: error, nothingSent: code == .unavailable)
        }
    }
}
