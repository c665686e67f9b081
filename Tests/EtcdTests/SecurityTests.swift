// TLS with client certificates and username/password auth, against a real etcd configured for them.

import Etcd
import Foundation
import TestSupport
import Testing

@Suite struct TLSTests {
    @Test func clientCertificatesWorkAndAWrongCAIsAClearError() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let files = try EtcdTLSFiles.generate(in: dir)
        let other = try EtcdTLSFiles.generate(in: dir, name: "other")
        try await EtcdServer.with(.init(tls: files)) { server in
            #expect(server.clientURL.hasPrefix("https://"))
            let tls = EtcdClient.TLS(
                caFile: files.caFile, certificateFile: files.clientCertFile, keyFile: files.clientKeyFile)
            try await withClient([server.clientURL], configure: { $0.tls = tls }) { etcd in
                let start = try await etcd.put("k", value: "v").header.revision
                #expect(try await etcd.get("k")?.valueString == "v")
                let watch = WatchRecorder(etcd.watch(.key("k"), fromRevision: start + 1))
                try await etcd.put("k", value: "w")
                await watch.wait("an event over TLS") { $0.events.count == 1 }
                await watch.cancel()
            }

            // A CA that did not sign the server's certificate.
            let wrongCA = EtcdClient.TLS(
                caFile: other.caFile, certificateFile: files.clientCertFile,
                keyFile: files.clientKeyFile)
            try await withClient([server.clientURL], configure: { $0.tls = wrongCA }) { etcd in
                let error = await etcdError { try await etcd.get("k") }
                guard case .unavailable(_, let failures)? = error, case .tls(let reason, _, _)? = failures.first else {
                    Issue.record("\(String(describing: error))")
                    return
                }
                #expect(reason.contains("CERTIFICATE_VERIFY_FAILED"), "\(reason)")
                #expect("\(error!)".contains("TLS handshake failed") && "\(error!)".contains("CA file"), "\(error!)")
            }

            // No client certificate: the server refuses the handshake.
            try await withClient([server.clientURL], configure: { $0.tls = .init(caFile: files.caFile) }) { etcd in
                let error = await etcdError { try await etcd.get("k") }
                #expect(error?.isUnavailable == true, "\(String(describing: error))")
            }
        }
    }

    @Test func unreadableFilesFailAtStartUp() throws {
        var configuration = EtcdClient.Configuration(endpoints: ["https://127.0.0.1:2379"])
        configuration.tls = .init(caFile: "/nonexistent/ca.crt")
        #expect {
            _ = try EtcdClient(configuration: configuration)
        } throws: { error in
            guard case EtcdError.invalidConfiguration(let reason) = error else { return false }
            return reason.contains("/nonexistent/ca.crt")
        }
        configuration.tls = .init(certificateFile: "/etc/hostname")
        #expect(throws: EtcdError.self) { _ = try EtcdClient(configuration: configuration) }
    }
}

@Suite struct AuthTests {
    @Test func passwordAuthAndReauthenticationAfterTheTokenExpires() async throws {
        try await EtcdServer.with(.init(authTokenTTL: 2)) { server in
            try server.enableAuth(rootPassword: "s3cret")
            let credentials = EtcdClient.Credentials(username: "root", password: "s3cret")
            try await withClient([server.clientURL], configure: { $0.credentials = credentials }) { etcd in
                try await etcd.put("k", value: "1")
                #expect(try await etcd.get("k")?.valueString == "1")
                #expect(etcd.statistics.authentications == 1)

                try await Task.sleep(for: .seconds(3.5))  // the token expires after 2 s unused
                #expect(try await etcd.get("k")?.valueString == "1")
                #expect(etcd.statistics.authentications == 2)

                // A watch created with an expired token: refused, new token, same revision.
                try await Task.sleep(for: .seconds(3.5))
                let start = try await etcd.range(.all).header.revision  // (this re-authenticates: 3)
                try await Task.sleep(for: .seconds(3.5))
                let watch = WatchRecorder(etcd.watch(.key("k"), fromRevision: start + 1))
                await watch.wait("the refused watch") { !$0.interruptions.isEmpty }
                try await etcd.put("k", value: "2")
                await watch.wait("the event after re-authenticating") { $0.events.count == 1 }
                #expect(watch.events.first?.kv.valueString == "2")
                #expect(etcd.statistics.authentications == 4)
                await watch.cancel()
            }

            // A wrong password is an error of its own, not retried.
            try await withClient(
                [server.clientURL],
                configure: { $0.credentials = .init(username: "root", password: "wrong") }
            ) { etcd in
                let error = await etcdError { try await etcd.get("k") }
                guard case .authenticationFailed(let user, let message, _)? = error else {
                    Issue.record("\(String(describing: error))")
                    return
                }
                #expect(user == "root" && message.contains("authentication failed"))
            }

            // No credentials at all: etcd's own message.
            try await withClient([server.clientURL]) { etcd in
                let error = await etcdError { try await etcd.get("k") }
                guard case .server(.invalidArgument, let message, _, _)? = error else {
                    Issue.record("\(String(describing: error))")
                    return
                }
                #expect(message.contains("user name is empty"))
            }
        }
    }
}
