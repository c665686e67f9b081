// The portmap plugin: a chained plugin that publishes container ports on the node, in the
// reference's iptables or nftables layout (Netfilter's HostPorts), so a node can switch between
// the reference binary and this one with containers running.
//
// Where it does better than the reference:
// - DEL removes the container's rules even without `portMappings` (the reference keeps them) and
//   even when the config is one that ADD rejected, so a runtime's DEL chain is never stopped
//   here (which would leak the bridge's veth and IP).
// - GC removes the rules of containers that are not valid attachments.
// - DEL, like ADD, removes stale conntrack entries of UDP host ports.
// - ADD is a transaction: when a later step fails, the rules it installed are removed.
// On every pod start the plugin runs once; with no `portMappings` it returns the previous result
// without starting a single process.

import Addressing
import CNI
import Netfilter
import PluginKernel

public struct Portmap: CNIPlugin {
    let hostPorts: HostPorts
    /// Where route_localnet is set (LocalnetRouting.swift).
    let kernel: any PluginKernel

    /// The rules are applied through `hostPorts` (nftables over netlink, iptables through its
    /// tools) and route_localnet through `kernel`: tests pass a recording runner and an
    /// in-memory kernel.
    public init(
        hostPorts: HostPorts = HostPorts(nftables: NetlinkNFTables()), kernel: any PluginKernel = SystemKernel()
    ) {
        self.hostPorts = hostPorts
        self.kernel = kernel
    }

    // MARK: ADD

    public func add(_ request: Request) throws -> Result {
        var conf: PortmapConfig
        do {
            conf = try PortmapConfig(request)
            try conf.resolveBackend(hostPorts)
        } catch { throw CNIError.wrap(error, "failed to parse config") }
        guard let prev = request.prevResult else { throw CNIError(.internal, "must be called as chained plugin") }
        let fwd = conf.forwarding
        guard !fwd.mappings.isEmpty, !conf.containerAddresses.isEmpty else { return prev }

        var undo = Rollback()
        defer { undo.runUnlessCommitted() }
        let backend: HostPorts.Backend
        do {
            backend = try hostPorts.setup(backend: conf.backend, fwd, addresses: conf.containerAddresses)
        } catch { throw CNIError(.internal, "unable to set up port forwarding: \(error)") }
        let families = conf.containerAddresses.map(\.family)
        undo.add("remove port forwarding") {
            _ = try hostPorts.teardown(
                backend: backend, network: fwd.network, containerID: fwd.containerID, families: families)
        }
        // After the rules exist, so that new packets of a flow that conntrack still sends to an
        // earlier container of this port take the new rules. Failures are only logged.
        deleteConntrack(fwd.udpHostPorts, families: families)
        if fwd.snat, let v4 = conf.containerAddresses.first(where: { $0.family == .v4 }) {
            try enableLocalnetRouting(to: v4.address, kernel: kernel)
        }
        undo.commit()
        return prev
    }

    // MARK: DEL

    /// Removes the container's rules, found by network and container ID alone. Idempotent. An
    /// invalid config is logged, not returned: DEL needs only the names.
    public func del(_ request: Request) throws {
        var backend = PortmapConfig.lenientBackend(request)
        var families: [IPFamily] = [.v4, .v6]
        var udpPorts: [Int] = []
        do {
            let conf = try PortmapConfig(request)
            backend = conf.backend
            udpPorts = conf.forwarding.udpHostPorts
            // prevResult (the ADD result, CNI >= 0.4.0) tells which families have rules.
            if !conf.containerAddresses.isEmpty { families = conf.containerAddresses.map(\.family) }
        } catch {
            logStderr(
                "portmap DEL: ignoring invalid config (\(error)); removing the rules of \(request.env.containerID) anyway"
            )
        }
        let removed: [UDPPort]
        do {
            removed = try hostPorts.teardown(
                backend: backend, network: request.name,
                containerID: request.env.containerID, families: families)
        } catch {
            throw CNIError(.internal, "could not remove port forwarding of \(request.env.containerID): \(error)")
        }
        var stale = Set(removed.map(\.port))
        stale.formUnion(udpPorts)
        deleteConntrack(stale.sorted(), families: families)
    }

    // MARK: CHECK

    public func check(_ request: Request) throws {
        var conf = try PortmapConfig(request)
        try conf.resolveBackend(hostPorts)
        guard request.prevResult != nil else { throw CNIError(.internal, "Required prevResult missing") }
        guard !conf.forwarding.mappings.isEmpty, !conf.containerAddresses.isEmpty else { return }
        let missing: String?
        do {
            missing = try hostPorts.check(backend: conf.backend, conf.forwarding, addresses: conf.containerAddresses)
        } catch { throw CNIError(.internal, "could not check port forwarding: \(error)") }
        if let missing {
            throw CNIError(.internal, "port forwarding of \(request.env.containerID) is incomplete: \(missing)")
        }
    }

    // MARK: GC, STATUS

    /// Removes the rules of every container of this network that is not in
    /// `cni.dev/valid-attachments` (nothing when the key is absent).
    public func gc(_ request: Request) throws {
        guard let valid = try request.validAttachments else { return }
        do {
            try hostPorts.gc(
                backend: PortmapConfig.lenientBackend(request), network: request.name,
                validContainerIDs: Set(valid.map(\.containerID)))
        } catch { throw CNIError(.internal, "failed to remove stale port forwarding: \(error)") }
    }

    /// Port forwarding needs nothing but the kernel: always available.
    public func status(_ request: Request) throws {}

    // MARK: -

    private func deleteConntrack(_ ports: [Int], families: [IPFamily]) {
        let all = families.flatMap { f in ports.map { UDPPort(family: f, port: $0) } }
        do { try hostPorts.deleteConntrack(all) } catch {
            logStderr("portmap: failed to delete stale UDP conntrack entries: \(error)")
        }
    }
}
