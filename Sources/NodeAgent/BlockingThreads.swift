// The agent's blocking calls run on threads of their own, never on Swift's cooperative pool.
// A netlink dump of a big table or an iptables-restore waiting up to 60 s for the xtables lock
// blocks its thread; on the cooperative pool (one thread per core, two on a small node) that
// would stall the lease watch and the lease renewal with it. So:
// - kernel calls (the overlay network: start, reconcile, setPeer, removePeer; link lookups) run
//   on one "kernel" thread: the network serialises them anyway;
// - netfilter calls (the masquerade and forward rules) run on one "netfilter" thread, so a held
//   iptables lock delays only the rules, not the peers.
// The HTTP endpoints run on NIO's event loops, which block on neither.

import Logging
import NIOPosix

/// Rules the agent keeps in place (flanneld's masquerade and forward rules): installed at start-up
/// and checked again every resync period.
public protocol RuleKeeper: Sendable {
    /// Once at start-up, before the first `ensure`: removes what the other netfilter backend left
    /// (the node ran with the other `EnableNFTables`); returns whether anything was removed.
    /// Blocking; the agent calls it on its netfilter thread.
    func removeLeftovers() throws -> Bool
    /// Installs the rules unless all are present; returns whether anything was (re)written.
    /// Blocking (it runs iptables or nft): the agent calls it on its netfilter thread.
    func ensure() throws -> Bool
}

extension RuleKeeper {
    /// Nothing to remove: rules with a single backend.
    public func removeLeftovers() throws -> Bool { false }
}

/// The two threads of the agent's blocking calls; see the file's note.
public final class BlockingThreads: Sendable {
    private let kernelPool = NIOThreadPool(numberOfThreads: 1)
    private let netfilterPool = NIOThreadPool(numberOfThreads: 1)

    public init() {
        kernelPool.start()
        netfilterPool.start()
    }

    deinit {
        // Lets the threads end (a call still running finishes first); nothing waits for them.
        kernelPool.shutdownGracefully { _ in }
        netfilterPool.shutdownGracefully { _ in }
    }

    /// Runs `body` (netlink through the overlay network or the data path) on the kernel thread.
    public func kernel<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await kernelPool.runIfActive(body)
    }

    /// Runs `body` (iptables, nft) on the netfilter thread.
    public func netfilter<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await netfilterPool.runIfActive(body)
    }
}

extension RuleKeeper {
    /// `ensure()` on the netfilter thread; logged when it (re)installed the rules.
    func ensure(on threads: BlockingThreads, for state: NodeState, logger: Logger) async throws -> Bool {
        guard try await threads.netfilter({ try self.ensure() }) else { return false }
        let lease = await state.lease
        var metadata: Logger.Metadata = ["masq.network": "\(state.config.network)", "masq.subnet": "\(lease.subnet)"]
        if state.config.isDualStack, let ipv6 = state.config.ipv6, let subnet = lease.ipv6Subnet {
            metadata["masq.ipv6_network"] = "\(ipv6.network)"
            metadata["masq.ipv6_subnet"] = "\(subnet)"
        }
        logger.info("installed the traffic rules", metadata: metadata)
        return true
    }
}
