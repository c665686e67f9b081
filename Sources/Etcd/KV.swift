// Keys and values: range, put, delete, transactions and compaction (`/v3/kv/*`), plus the
// transaction a lease registry needs: create-if-absent.

extension EtcdClient {
    /// The keys in `range`, as of `revision` (0: the latest), at most `limit` of them (0: all).
    ///
    /// A `revision` older than the last compaction fails with `EtcdError.server(.outOfRange, ...)`
    /// (``EtcdError/isCompacted``).
    // etcdctl get <key> [--prefix] [--rev <revision>] [--limit <limit>]
    public func range(
        _ range: KeyRange, revision: Int64 = 0, limit: Int64 = 0,
        keysOnly: Bool = false
    ) async throws(EtcdError) -> RangeResponse {
        let body = EtcdRequest.range(range, revision: revision, limit: limit, keysOnly: keysOnly)
        return try await transport.call("/kv/range", body, idempotent: true, as: RangeResponse.self)
    }

    /// The key, or `nil` when it does not exist.
    public func get(_ key: some EtcdBytesConvertible) async throws(EtcdError) -> KeyValue? {
        try await range(.key(key)).kvs.first
    }

    /// Writes `value` at `key`, attached to `lease` (`nil` detaches it from any lease).
    // etcdctl put <key> <value> [--lease <id>]
    @discardableResult
    public func put(
        _ key: some EtcdBytesConvertible, value: some EtcdBytesConvertible, lease: LeaseID? = nil,
        prevKV: Bool = false
    ) async throws(EtcdError) -> PutResponse {
        try await transport.call(
            "/kv/put",
            EtcdRequest.put(
                key: key.etcdBytes, value: value.etcdBytes,
                lease: lease, prevKV: prevKV),
            idempotent: false, as: PutResponse.self)
    }

    /// Deletes the keys in `range`; deleting nothing is not an error (`deleted` is 0).
    // etcdctl del <key> [--prefix]
    @discardableResult
    public func delete(_ range: KeyRange, prevKV: Bool = false) async throws(EtcdError) -> DeleteResponse {
        try await transport.call(
            "/kv/deleterange", EtcdRequest.deleteRange(range, prevKV: prevKV),
            idempotent: false, as: DeleteResponse.self)
    }

    /// Runs `success` if every comparison holds, else `failure`, atomically at one revision.
    // etcdctl txn
    public func txn(
        if compare: [Compare], then success: [TxnOp],
        else failure: [TxnOp] = []
    ) async throws(EtcdError) -> TxnResponse {
        try await transport.call(
            "/kv/txn", EtcdRequest.txn(compare: compare, success: success, failure: failure),
            idempotent: false, as: TxnResponse.self)
    }

    /// Writes `key` only if it does not exist (create revision 0). When it does, nothing is
    /// written and the answer holds the key as it is, read in the same transaction.
    public func create(
        _ key: some EtcdBytesConvertible, value: some EtcdBytesConvertible,
        lease: LeaseID? = nil
    ) async throws(EtcdError) -> CreateResult {
        let response = try await txn(
            if: [.absent(key)], then: [.put(key, value, lease: lease)],
            else: [.range(.key(key))])
        if response.succeeded { return .created(revision: response.header.revision) }
        guard case .range(let range)? = response.responses.first, let current = range.kvs.first else {
            // Deleted again between the compare and the range: impossible within one txn.
            throw .malformedResponse(
                reason: "failed create without the existing key",
                request: configuration.basePath + "/kv/txn", endpoint: currentEndpoint)
        }
        return .exists(current)
    }

    /// Discards the history before `revision`; watches and ranges from older revisions then fail
    /// with the compacted revision. `physical` waits until the space is actually freed.
    // etcdctl compaction [--physical] <revision>
    @discardableResult
    public func compact(revision: Int64, physical: Bool = true) async throws(EtcdError) -> ResponseHeader {
        try await transport.call(
            "/kv/compaction", EtcdRequest.compaction(revision: revision, physical: physical),
            idempotent: true, as: HeaderOnlyWire.self
        ).header
    }
}
