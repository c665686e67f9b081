// Every decoder of the gateway's answers behind one public function, for the fuzz target
// `etcd-response` (Sources/FuzzTargets) and its corpus replay. Pure: no I/O, no NIO, so the fuzz
// build compiles this file with Codec.swift, Model.swift and EtcdError.swift alone.

public enum EtcdWireDecoding {
    /// Decodes `bytes` as each answer this client reads: the unary answers (range, put,
    /// delete-range, txn, lease grant, time-to-live, revoke, authenticate, compaction), an error
    /// answer, and every line as a watch-stream and a keep-alive-stream frame. Malformed input
    /// makes the decoders throw; they must never trap. Returns how many decodes succeeded.
    @discardableResult
    public static func decodeEveryAnswer(_ bytes: [UInt8]) -> Int {
        var ok = 0
        func attempt<T: WireDecodable>(_ type: T.Type, _ input: some Collection<UInt8>) {
            if (try? decodeWire(type, from: input)) != nil { ok += 1 }
        }
        attempt(RangeResponse.self, bytes)
        attempt(PutResponse.self, bytes)
        attempt(DeleteResponse.self, bytes)
        attempt(TxnResponse.self, bytes)
        attempt(LeaseGrantWire.self, bytes)
        attempt(LeaseTimeToLive.self, bytes)
        attempt(HeaderOnlyWire.self, bytes)
        attempt(AuthenticateWire.self, bytes)
        attempt(ErrorWire.self, bytes)
        for line in bytes.split(separator: UInt8(ascii: "\n")) {
            attempt(StreamFrame<WatchResponseWire>.self, line)
            attempt(StreamFrame<LeaseKeepAliveWire>.self, line)
        }
        return ok
    }
}
