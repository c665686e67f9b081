// podnetd's HTTP server under a flood of idle connections (issue 8, item 7): the built daemon,
// more idle connections than its cap and a few that send their request head byte by byte. It
// must keep answering /healthz, close them all, give back its descriptors and memory, and keep
// following etcd.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct HealthServer {
        static let port = 9102

        @Test func anIdleConnectionFloodIsClosedAndHealthzKeepsAnswering() throws {
            var options = ClusterOptions(nodes: 2, podsPerNode: 0)
            options.daemonArguments = [
                "--healthz-ip", "127.0.0.1", "--healthz-port", "\(Self.port)",
                "--healthz-max-connections", "32", "--healthz-idle-timeout", "3",
                "--healthz-header-timeout", "6",
            ]
            try Cluster.with(options) { c in
                let n1 = c.nodes[0]
                let pid = try #require(n1.pid)
                // Warm up, then the baseline.
                for _ in 0..<20 { #expect(try healthz(n1) == "podnetd is running") }
                let baseline = (fds: try openDescriptors(pid), rss: try residentKB(pid))
                print("[daemon-e2e] podnetd baseline: \(baseline.fds) descriptors, \(baseline.rss) kB resident")

                // 3000 idle connections and 4 that trickle a request head.
                let script = c.directory + "/flood.py", log = c.directory + "/flood.log"
                try Self.flooder.write(toFile: script, atomically: true, encoding: .utf8)
                let flood = try n1.background(
                    ["/usr/bin/env", "python3", script, "\(Self.port)", "3000", "4", "120"],
                    log: log)
                defer { if flood.isRunning { kill(flood.processIdentifier, SIGKILL) } }
                let opened = secondsUntil(within: 60) {
                    ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("opened ")
                }
                #expect(opened != nil, "the flooder did not connect: \(Self.tail(log))")
                let opening = Self.tail(log).split(separator: "\n").first {
                    $0.hasPrefix("opened ") || $0.hasPrefix("connect failed")
                }
                print("[daemon-e2e] flooder: \(opening ?? "?")")

                // While the flood holds what it could: /healthz answers, descriptors stay bounded.
                for _ in 0..<5 { #expect(try healthz(n1) == "podnetd is running") }
                let during = try openDescriptors(pid)
                print(
                    "[daemon-e2e] podnetd during the flood: \(during) descriptors, \(try residentKB(pid)) kB resident")
                #expect(
                    during <= baseline.fds + 32 + 8, "\(during) descriptors open (cap 32, baseline \(baseline.fds))")

                // Every connection is closed by the daemon: the oldest by the cap, the rest idle,
                // the trickling ones by the header timeout.
                let closed = secondsUntil(within: 100) { Self.tail(log).contains("done 0 0") }
                #expect(closed != nil, "connections left open: \(Self.tail(log).split(separator: "\n").suffix(2))")
                flood.waitUntilExit()

                // Descriptors and memory come back near the baseline.
                var after = (fds: 0, rss: 0)
                let back = try secondsUntil(within: 20) {
                    after = (try openDescriptors(pid), try residentKB(pid))
                    return after.fds <= baseline.fds + 2 && after.rss <= baseline.rss + 8 * 1024
                }
                print("[daemon-e2e] podnetd after the flood: \(after.fds) descriptors, \(after.rss) kB resident")
                #expect(back != nil, "after: \(after), baseline: \(baseline)")
                #expect(try healthz(n1) == "podnetd is running")

                // And it still follows etcd: a new lease is programmed.
                try FakePeer(n: 220).put(c)
                #expect(try expectConverged(c, within: 15, "a lease written after the flood") != nil)
                #expect(n1.isRunning, "\(n1.logTail())")
            }
        }

        /// GET /healthz inside the node's namespace; the body.
        func healthz(_ node: ClusterNode) throws -> String {
            try node.namespace.sh("curl -sS -m 5 http://127.0.0.1:\(Self.port)/healthz")
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func openDescriptors(_ pid: Int32) throws -> Int {
            try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        }

        func residentKB(_ pid: Int32) throws -> Int {
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
            else {
                throw TestFailure("no VmRSS in /proc/\(pid)/status")
            }
            return kb
        }

        static func tail(_ log: String) -> String {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(3).joined(
                separator: "\n")
        }

        /// python3 flood.py PORT IDLE SLOW SECONDS: opens IDLE connections that send nothing and
        /// SLOW ones that send a request line and then one header byte every 0.3 s; prints
        /// "opened ...", then "open <idle> <slow>" as the server closes them, and "done <idle>
        /// <slow>" when all are closed or SECONDS have passed.
        static let flooder = #"""
            import resource, socket, sys, time, select
            port, count, slow, limit = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            idle, slows = {}, {}
            for i in range(count):
                s = socket.socket(); s.settimeout(5)
                try:
                    s.connect(("127.0.0.1", port))
                except OSError as e:
                    print("connect failed after", i, e, flush=True); break
                s.setblocking(False); idle[s.fileno()] = s
            for i in range(slow):
                s = socket.socket(); s.connect(("127.0.0.1", port)); s.send(b"GET /healthz HTTP/1.1\r\n")
                s.setblocking(False); slows[s.fileno()] = s
            print("opened", len(idle), len(slows), flush=True)
            def closed(s):
                try:
                    return s.recv(1) == b""
                except BlockingIOError:
                    return False
                except OSError:
                    return True
            poll = select.poll()
            for fd in list(idle) + list(slows): poll.register(fd, select.POLLIN)
            deadline = time.time() + limit
            while time.time() < deadline and (idle or slows):
                for fd, s in list(slows.items()):
                    try: s.send(b"X")
                    except OSError: pass
                for fd, ev in poll.poll(300):
                    s = idle.get(fd) or slows.get(fd)
                    if s is not None and closed(s):
                        poll.unregister(fd); idle.pop(fd, None); slows.pop(fd, None); s.close()
                print("open", len(idle), len(slows), flush=True)
            print("done", len(idle), len(slows), flush=True)
            """#
    }
}
