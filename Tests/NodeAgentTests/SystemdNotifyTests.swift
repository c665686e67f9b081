// sd_notify: READY=1 when the notifier starts (after the agent's start-up), STOPPING=1 when a
// graceful shutdown begins, on a datagram socket the test binds as systemd would.

import Foundation
import Logging
import NodeAgent
import ServiceLifecycleTestKit
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct SystemdNotifyTests {
    @Test(arguments: [false, true]) func readyThenStoppingOnGracefulShutdown(abstract: Bool) async throws {
        let name = "podnet-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let socket = try DatagramSocket(path: abstract ? "@" + name : NSTemporaryDirectory() + name)
        let notifier = ReadinessNotifier(notifier: SystemdNotifier(socketPath: socket.path), logger: quiet)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await notifier.run() }
                #expect(await socket.next(timeout: 30) == "READY=1")
                trigger.triggerGracefulShutdown()
                #expect(await socket.next(timeout: 30) == "STOPPING=1")
                try await tasks.waitForAll()
            }
        }
    }

    @Test func withoutANotifySocketNothingIsSent() throws {
        try SystemdNotifier(socketPath: nil).notify("READY=1")
        try SystemdNotifier(socketPath: "").notify("READY=1")
    }

    @Test func aSocketThatIsGoneIsAnErrorNamingIt() {
        let path = NSTemporaryDirectory() + "podnet-notify-missing-\(getpid())"
        #expect {
            try SystemdNotifier(socketPath: path).notify("READY=1")
        } throws: { error in
            "\(error)".contains(path)
        }
    }
}
