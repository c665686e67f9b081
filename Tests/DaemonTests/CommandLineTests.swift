// The built podnetd started as flanneld's units start flanneld: Go's single-dash flag syntax,
// FLANNELD_* variables, and systemd's readiness protocol (READY=1 only once subnet.env exists; while
// etcd cannot be reached at start-up, /healthz answers and /readyz says 503).

import Foundation
import NodeAgent
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct CommandLine {
        @Test func aSingleDashCommandLineStartsTheDaemonAndReadinessIsNotified() throws {
            try Cluster.with(ClusterOptions(nodes: 0, podsPerNode: 0)) { c in
                let node = try c.addNode(start: false)
                node.goStyleCommandLine = true
                node.arguments = [
                    "--ip-masq", "--ip-blackhole-route", "--healthz-ip", "127.0.0.1", "--healthz-port", "9102",
                ]
                let socket = try DatagramSocket(path: node.directory + "/notify.sock")
                // From the environment, as flanneld's packaged units set it; the command line's
                // -ip-masq wins over the variable's false.
                node.environment = [
                    "NOTIFY_SOCKET": socket.path, "FLANNELD_IP_MASQ": "false", "FLANNELD_V": "1",
                ]
                #expect(node.commandLine().contains { $0.hasPrefix("-etcd-endpoints=http") })
                func get(_ path: String) throws -> String {
                    try node.namespace.sh("curl -s -w ' %{http_code}' http://127.0.0.1:9102\(path)")
                }
                // etcd unreachable at start-up: alive, not ready, nothing notified.
                try c.etcd.disconnect()
                try node.start()
                let waiting = secondsUntil(within: 30) { node.currentLog.contains("cannot read the network config") }
                #expect(waiting != nil, "\(node.logTail())")
                #expect(try get("/healthz").hasSuffix(" 200"))
                #expect(try get("/readyz").hasSuffix(" 503"))
                #expect(socket.receive(timeout: 0) == nil)
                #expect(!FileManager.default.fileExists(atPath: node.subnetFile))
                try c.etcd.reconnect()
                let ready = socket.receive(timeout: 30)
                #expect(ready == "READY=1", "\(node.logTail())")
                #expect(FileManager.default.fileExists(atPath: node.subnetFile), "READY=1 before subnet.env")
                let env = try String(contentsOfFile: node.subnetFile, encoding: .utf8)
                #expect(env.contains("FLANNEL_IPMASQ=true"), "\(env)")
                #expect(try get("/readyz").hasSuffix(" 200"))
                let blackhole = try node.namespace.sh("ip route show type blackhole")
                #expect(blackhole.contains("blackhole \(try node.subnet())"), "\(blackhole)")
                #expect(node.currentLog.contains("installed the traffic rules"), "\(node.logTail())")
                // -v=1 from FLANNELD_V: debug messages are logged (the peer watch's, once it is open).
                let debug = secondsUntil(within: 10) { node.currentLog.contains("debug podnet.etcd") }
                #expect(debug != nil, "\(node.logTail())")
                #expect(node.stop() == 0)
                #expect(socket.receive(timeout: 10) == "STOPPING=1")
            }
        }

        @Test func versionHelpAndFlagsPodnetdCannotHonour() throws {
            let podnetd = pluginDirectory + "/podnetd"
            let version = try run([podnetd, "-version"])
            #expect(version.status == 0 && version.stdout.hasPrefix("podnetd "), "\(version)")
            let help = try run([podnetd, "-help"])
            for flag in GoCommandLine.podnetd.flags {
                let listed = help.stdout.contains("--\(flag) ") || help.stdout.contains("--\(flag)/")
                #expect(listed, "--help does not list --\(flag)")
            }
            let kube = try run([podnetd, "-kube-subnet-mgr"])
            #expect(kube.status != 0 && kube.stderr.contains("-kube-subnet-mgr is not supported"), "\(kube)")
            let env = try run([podnetd], env: ["FLANNELD_KUBE_SUBNET_MGR": "true"])
            #expect(env.status != 0 && env.stderr.contains("FLANNELD_KUBE_SUBNET_MGR is set"), "\(env)")
            let margin = try run([podnetd, "-subnet-lease-renew-margin=0"])
            #expect(margin.status != 0 && margin.stderr.contains("--subnet-lease-renew-margin"), "\(margin)")
        }
    }
}
