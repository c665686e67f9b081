// The gateway's JSON, against the real samples in flannel.md §10.3 and §10.5 (etcd 3.4.23).

import TestSupport
import Testing

@testable import Etcd

/// The header etcd sends, as in the samples.
private func header(_ revision: Int) -> String {
    #""header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"\#(revision)","raft_term":"2"}"#
}

private func decode<T: WireDecodable>(_ type: T.Type, _ json: String) throws -> T {
    try decodeWire(type, from: Array(json.utf8))
}

private let configKey = "/coreos.com/network/config"
private let configKey64 = "L2NvcmVvcy5jb20vbmV0d29yay9jb25maWc="
private let config = #"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#
private let config64 = "eyJOZXR3b3JrIjoiMTAuNS4wLjAvMTYiLCJCYWNrZW5kIjp7IlR5cGUiOiJ2eGxhbiJ9fQ=="
private let subnetKey = "/coreos.com/network/subnets/10.5.34.0-24"
private let subnetKey64 = "L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLzEwLjUuMzQuMC0yNA=="

@Suite struct RequestEncoding {
    @Test func putIsBase64WithPadding() {
        #expect(
            EtcdRequest.put(key: configKey.etcdBytes, value: config.etcdBytes)
                == #"{"key":"\#(configKey64)","value":"\#(config64)"}"#)
    }

    @Test func leaseIDsAndRevisionsAreStrings() {
        #expect(
            EtcdRequest.put(key: [0x61], value: [], lease: LeaseID(2324035529232632338), prevKV: true)
                == #"{"key":"YQ==","value":"","lease":"2324035529232632338","prev_kv":true}"#)
        #expect(
            EtcdRequest.leaseGrant(ttlSeconds: 60, id: LeaseID(7587862072907233287))
                == #"{"TTL":"60","ID":"7587862072907233287"}"#)
        #expect(EtcdRequest.leaseGrant(ttlSeconds: 86400, id: nil) == #"{"TTL":"86400"}"#)
        #expect(EtcdRequest.range(.key("a"), revision: 7, limit: 2) == #"{"key":"YQ==","limit":"2","revision":"7"}"#)
        #expect(
            EtcdRequest.timeToLive(LeaseID(2324035529232632338), keys: true)
                == #"{"ID":"2324035529232632338","keys":true}"#)
    }

    @Test func prefixRangeEndIncrementsTheLastByte() {
        let range = KeyRange.prefix("/coreos.com/network/subnets/")
        #expect(
            EtcdRequest.range(range)
                == #"{"key":"L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLw==","range_end":"L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzMA=="}"#
        )
        #expect(KeyRange.prefix([0x61, 0xff]).end == [0x62])
        #expect(KeyRange.prefix([0xff, 0xff]) == KeyRange(key: [0xff, 0xff], end: [0]))
        #expect(KeyRange.prefix("") == .all)
        #expect(EtcdRequest.range(.all) == #"{"key":"AA==","range_end":"AA=="}"#)
    }

    @Test func createIfAbsentTxn() {
        let txn = EtcdRequest.txn(
            compare: [.absent(subnetKey)],
            success: [.put(subnetKey, "{}", lease: LeaseID(2324035529232632338))],
            failure: [.range(.key(subnetKey))])
        #expect(
            txn == #"{"compare":[{"target":"CREATE","key":"\#(subnetKey64)","result":"EQUAL","create_revision":"0"}],"#
                + #""success":[{"request_put":{"key":"\#(subnetKey64)","value":"e30=","lease":"2324035529232632338"}}],"#
                + #""failure":[{"request_range":{"key":"\#(subnetKey64)"}}]}"#)
    }

    @Test func compareTargets() {
        let txn = EtcdRequest.txn(
            compare: [
                .modRevision("k", .equal, 3), .version("k", .greater, 0),
                .value("k", .notEqual, "v"), .lease("k", .equal, nil),
            ],
            success: [.delete(.prefix("k"), prevKV: true)], failure: [])
        #expect(
            txn == #"{"compare":[{"target":"MOD","key":"aw==","result":"EQUAL","mod_revision":"3"},"#
                + #"{"target":"VERSION","key":"aw==","result":"GREATER","version":"0"},"#
                + #"{"target":"VALUE","key":"aw==","result":"NOT_EQUAL","value":"dg=="},"#
                + #"{"target":"LEASE","key":"aw==","result":"EQUAL","lease":"0"}],"#
                + #""success":[{"request_delete_range":{"key":"aw==","range_end":"bA==","prev_kv":true}}],"failure":[]}"#
        )
    }

    @Test func watchCreateAndAuthenticate() {
        #expect(
            EtcdRequest.watchCreate(.prefix("/p/"), startRevision: 4, prevKV: true)
                == #"{"create_request":{"key":"L3Av","range_end":"L3Aw","start_revision":"4","prev_kv":true}}"#)
        #expect(
            EtcdRequest.watchCreate(.key("a"), startRevision: 0, prevKV: false) == #"{"create_request":{"key":"YQ=="}}"#
        )
        #expect(
            EtcdRequest.authenticate(name: "flannel", password: "p\"w\\\n")
                == #"{"name":"flannel","password":"p\"w\\\n"}"#)
    }
}

@Suite struct ResponseDecoding {
    @Test func rangeHit() throws {
        let r = try decode(
            RangeResponse.self,
            #"{\#(header(2)),"kvs":[{"key":"\#(configKey64)","create_revision":"2","#
                + #""mod_revision":"2","version":"1","value":"\#(config64)"}],"count":"1"}"#)
        #expect(r.header.revision == 2)
        #expect(r.header.clusterID == 324952591200643719)
        #expect(r.header.memberID == 3319814642761637952)
        #expect(r.count == 1 && !r.more)
        #expect(
            r.kvs == [
                KeyValue(
                    key: configKey.etcdBytes, value: config.etcdBytes, createRevision: 2, modRevision: 2,
                    version: 1, lease: nil)
            ])
        #expect(r.kvs[0].keyString == configKey && r.kvs[0].valueString == config)
    }

    @Test func rangeMissHasNoKvsAndNoCount() throws {
        let r = try decode(RangeResponse.self, "{\(header(2))}")
        #expect(r.kvs.isEmpty && r.count == 0 && !r.more && r.header.revision == 2)
    }

    @Test func numbersAreAcceptedWhereStringsAreUsual() throws {
        let r = try decode(
            RangeResponse.self,
            #"{"header":{"revision":7},"kvs":[{"key":"YQ==","mod_revision":5,"lease":9}],"count":1}"#)
        #expect(r.header.revision == 7 && r.count == 1 && r.kvs[0].modRevision == 5 && r.kvs[0].lease == LeaseID(9))
    }

    @Test func leaseGrant() throws {
        let g = try decode(LeaseGrantWire.self, #"{\#(header(2)),"ID":"2324035529232632329","TTL":"86400"}"#)
        #expect(g.grant.id == LeaseID(2324035529232632329) && g.grant.ttl == .seconds(86400) && g.error.isEmpty)
    }

    @Test func txnSucceededAndFailed() throws {
        let ok = try decode(
            TxnResponse.self,
            #"{\#(header(3)),"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}}]}"#)
        #expect(ok.succeeded && ok.header.revision == 3)
        guard case .put(let put)? = ok.responses.first else { Issue.record("no put response"); return }
        #expect(put.header.revision == 3 && put.prevKV == nil)
        // A failed txn has no "succeeded" key at all.
        let failed = try decode(TxnResponse.self, "{\(header(3))}")
        #expect(!failed.succeeded && failed.responses.isEmpty)
        let ranged = try decode(
            TxnResponse.self,
            #"{\#(header(7)),"responses":[{"response_range":{"header":{"revision":"7"},"#
                + #""kvs":[{"key":"aw==","create_revision":"3","mod_revision":"3","version":"1","lease":"2324035529232632338"}],"count":"1"}}]}"#
        )
        guard case .range(let range)? = ranged.responses.first else { Issue.record("no range response"); return }
        #expect(
            !ranged.succeeded && range.kvs.first?.lease == LeaseID(2324035529232632338) && range.kvs.first?.value == [])
    }

    @Test func timeToLive() throws {
        let t = try decode(
            LeaseTimeToLive.self,
            #"{\#(header(3)),"ID":"2324035529232632338","TTL":"86399","grantedTTL":"86400","keys":["\#(subnetKey64)"]}"#
        )
        #expect(t.id == LeaseID(2324035529232632338) && t.remaining == .seconds(86399) && t.granted == .seconds(86400))
        #expect(t.keys == [subnetKey.etcdBytes])
        // A key without a lease, or an unknown ID: HTTP 200 and TTL -1.
        let unknown = try decode(LeaseTimeToLive.self, #"{\#(header(3)),"TTL":"-1"}"#)
        #expect(unknown.remaining == nil && unknown.keys.isEmpty && unknown.id == LeaseID(0))
    }

    @Test func deleteRange() throws {
        let d = try decode(
            DeleteResponse.self,
            #"{\#(header(5)),"deleted":"1","prev_kvs":[{"key":"aw==","create_revision":"4","#
                + #""mod_revision":"4","version":"1","value":"dg==","lease":"2324035529232632343"}]}"#)
        #expect(
            d.deleted == 1 && d.prevKVs.first?.valueString == "v"
                && d.prevKVs.first?.lease == LeaseID(2324035529232632343))
        let none = try decode(DeleteResponse.self, "{\(header(5))}")
        #expect(none.deleted == 0 && none.prevKVs.isEmpty)
    }

    @Test func unaryErrors() throws {
        let e34 = try decode(
            ErrorWire.self,
            #"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#
        )
        #expect(e34 == ErrorWire(code: .notFound, message: "etcdserver: requested lease not found"))
        let e35 = try decode(ErrorWire.self, #"{"code":16,"message":"etcdserver: invalid auth token","details":[]}"#)
        #expect(e35 == ErrorWire(code: .unauthenticated, message: "etcdserver: invalid auth token"))
        let onlyError = try decode(
            ErrorWire.self, #"{"error":"etcdserver: mvcc: required revision has been compacted","code":11}"#)
        let error = EtcdError.server(
            code: onlyError.code, message: onlyError.message, request: "/v3/kv/range", endpoint: "e")
        #expect(error.isCompacted && !error.isLeaseNotFound)
    }

    @Test func keepAliveFrames() throws {
        let alive = try decode(
            StreamFrame<LeaseKeepAliveWire>.self,
            #"{"result":{\#(header(7)),"ID":"2324035529232632352","TTL":"30"}}"#)
        guard case .result(let r) = alive else { Issue.record("not a result"); return }
        #expect(r.id == LeaseID(2324035529232632352) && r.ttl == 30)
        // An unknown or expired lease: the TTL is left out.
        guard
            case .result(let gone) = try decode(
                StreamFrame<LeaseKeepAliveWire>.self, #"{"result":{\#(header(7)),"ID":"999"}}"#)
        else { Issue.record("not a result"); return }
        #expect(gone.ttl == 0)
    }

    @Test func watchFrames() throws {
        func frame(_ json: String) throws -> WatchResponseWire {
            guard case .result(let r) = try decode(StreamFrame<WatchResponseWire>.self, json) else {
                throw TestFailure("not a result: \(json)")
            }
            return r
        }
        let created = try frame(#"{"result":{\#(header(3)),"created":true}}"#)
        #expect(
            created.created && !created.canceled && created.events.isEmpty && created.watchID == 0
                && created.header.revision == 3)

        let put = try frame(
            #"{"result":{\#(header(4)),"events":[{"kv":{"key":"\#(subnetKey64)","create_revision":"4","#
                + #""mod_revision":"4","version":"1","value":"eyJQ","lease":"2324035529232632343"}}]}}"#)
        #expect(
            put.events == [
                WatchEvent(
                    kind: .put,
                    kv: KeyValue(
                        key: subnetKey.etcdBytes, value: Array("{\"P".utf8),
                        createRevision: 4, modRevision: 4, version: 1,
                        lease: LeaseID(2324035529232632343)))
            ])
        // DELETE events carry only the key and the mod_revision.
        let delete = try frame(
            #"{"result":{\#(header(5)),"events":[{"type":"DELETE","kv":{"key":"\#(subnetKey64)","mod_revision":"5"}}]}}"#
        )
        #expect(delete.events == [WatchEvent(kind: .delete, kv: KeyValue(key: subnetKey.etcdBytes, modRevision: 5))])

        // Compaction: the cancel answer has no header revision.
        let compacted = try frame(
            #"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","#
                + #""raft_term":"2"},"canceled":true,"compact_revision":"5"}}"#)
        #expect(compacted.canceled && compacted.compactRevision == 5 && compacted.header.revision == 0)

        let denied = try frame(
            #"{"result":{\#(header(3)),"watch_id":"-1","created":true,"canceled":true,"#
                + #""cancel_reason":"rpc error: code = InvalidArgument desc = etcdserver: user name is empty"}}"#)
        #expect(denied.canceled && denied.watchID == -1 && denied.cancelReason.hasSuffix("user name is empty"))
        #expect(EtcdError.isAuthenticationProblem(code: .ok, message: denied.cancelReason))

        let progress = try frame(#"{"result":{\#(header(13)),"watch_id":"-1"}}"#)
        #expect(progress.events.isEmpty && !progress.created && progress.header.revision == 13)
    }

    @Test func errorInsideAStream() throws {
        let frame = try decode(
            StreamFrame<WatchResponseWire>.self,
            #"{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}"#
        )
        guard case .error(let error) = frame else { Issue.record("not an error"); return }
        #expect(error == ErrorWire(code: .unavailable, message: "transport is closing"))
    }

    @Test func malformedAnswersAreErrors() {
        #expect(throws: (any Error).self) { try decode(RangeResponse.self, #"{"kvs":[{"key":"not base64!"}]}"#) }
        #expect(throws: (any Error).self) { try decode(RangeResponse.self, #"{"count":"many"}"#) }
        #expect(throws: (any Error).self) { try decode(StreamFrame<WatchResponseWire>.self, #"{"neither":1}"#) }
    }
}

@Suite struct Framing {
    @Test func linesAcrossChunkBoundaries() {
        var splitter = LineSplitter()
        #expect(splitter.append(Array(#"{"result":{"a""#.utf8)).isEmpty)
        #expect(splitter.append(Array(":1}}\n\n{\"res".utf8)) == [Array(#"{"result":{"a":1}}"#.utf8)])
        #expect(splitter.append(Array("ult\":{}}\r\n".utf8)) == [Array("{\"result\":{}}\r".utf8)])
        #expect(splitter.finish() == nil)
        #expect(splitter.append(Array("tail".utf8)).isEmpty)
        #expect(splitter.finish() == Array("tail".utf8))
    }

    @Test func backoffDoublesUpToItsCap() {
        let backoff = EtcdClient.Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        let delays = (1...8).map { backoff.delay(afterFailures: $0) }
        #expect(delays[0] >= .milliseconds(80) && delays[0] <= .milliseconds(100))
        #expect(delays[2] >= .milliseconds(320) && delays[2] <= .milliseconds(400))
        #expect(delays.allSatisfy { $0 <= .seconds(1) })
        #expect(delays[7] >= .milliseconds(800))
    }

    @Test func endpointsAreNormalized() throws {
        var configuration = EtcdClient.Configuration(endpoints: [
            "127.0.0.1:2379", "https://etcd-1:2379/", " http://a:1 ",
        ])
        #expect(
            try configuration.normalizedEndpoints() == ["http://127.0.0.1:2379", "https://etcd-1:2379", "http://a:1"])
        configuration.tls = .init()
        #expect(try configuration.normalizedEndpoints().first == "https://127.0.0.1:2379")
        configuration.endpoints = ["ftp://x:1"]
        #expect(throws: EtcdError.self) { try configuration.normalizedEndpoints() }
        configuration.endpoints = []
        #expect(throws: EtcdError.self) { try configuration.normalizedEndpoints() }
    }
}
