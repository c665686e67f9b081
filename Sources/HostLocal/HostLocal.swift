// host-local: IPAM from address ranges, with reservations kept as files on this host
// (plugins/ipam/host-local). Every verb takes the network's flock once and holds it throughout, so
// concurrent invocations, of this binary or of the Go one, see each other's reservations.
//
// - ADD: one address per range set (round robin), all or nothing; the result has ips, routes, dns.
// - DEL: releases everything the attachment holds; needs no netns and no valid ranges; repeatable.
// - CHECK: the attachment holds some address (as the reference: not necessarily prevResult's).
// - GC: releases every reservation not held by `cni.dev/valid-attachments`; no list, no change.
// - STATUS: the data directory can be created and written.

import CNI
import IPAM

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public struct HostLocal: CNIPlugin {
    public init() {}

    public func add(_ request: Request) throws -> Result {
        let conf = try HostLocalConfig(request)
        // Routes the kernel could not hold fail here, before an address is reserved, rather than
        // in the plugin that would program them.
        for (i, r) in conf.routes.enumerated() { _ = try r.kernelValues(path: "ipam.routes[\(i)]") }
        let dns = try conf.resolvConf.map(ResolvConf.load) ?? Result.DNS()
        let store = try openStore(conf.network, conf.dataDir)
        let allocations = try locked(store) { () throws(IPAMError) in
            try Allocator.allocate(
                rangeSets: conf.rangeSets, requested: conf.requestedIPs,
                id: request.env.containerID, ifname: request.env.ifname, store: store)
        }
        return Result(
            ips: allocations.map { Result.IPConfig(address: $0.address, gateway: $0.gateway) },
            routes: conf.routes, dns: dns)
    }

    public func del(_ request: Request) throws {
        let (network, dataDir) = try HostLocalConfig.store(request)
        let store = try openStore(network, dataDir)
        try locked(store) { () throws(IPAMError) in
            _ = try store.release(id: request.env.containerID, ifname: request.env.ifname)
        }
    }

    public func check(_ request: Request) throws {
        let conf = try HostLocalConfig(request)
        let store = try openStore(conf.network, conf.dataDir)
        let held = try locked(store) { () throws(IPAMError) in
            store.getByID(id: request.env.containerID, ifname: request.env.ifname)
        }
        if held.isEmpty {
            throw CNIError(
                .internal, "host-local: Failed to find address added by container \(request.env.containerID)")
        }
    }

    public func gc(_ request: Request) throws {
        let (network, dataDir) = try HostLocalConfig.store(request)
        // Without the list nothing is known to be stale; an empty list means nothing is valid.
        guard let valid = try request.validAttachments else { return }
        let owners = Set(valid.map { Reservation.Owner(containerID: $0.containerID, ifname: $0.ifname) })
        let store = try openStore(network, dataDir)
        let released = try locked(store) { () throws(IPAMError) in try store.releaseAll(notHeldBy: owners) }
        for r in released { logStderr("host-local: GC released \(r)") }
    }

    public func status(_ request: Request) throws {
        do {
            let conf = try HostLocalConfig(request)
            let store = try openStore(conf.network, conf.dataDir)
            guard access(store.directory, W_OK | X_OK) == 0 else {
                throw CNIError(
                    .notAvailable,
                    "host-local: data directory \(store.directory) is not writable: "
                        + String(cString: strerror(errno)))
            }
        } catch let e as CNIError where e.code != CNIError.Code.notAvailable.rawValue {
            // STATUS reports only "available" or not (code 50); the reason stays in the message.
            throw CNIError(.notAvailable, "host-local cannot allocate: \(e.msg)", details: e.details)
        }
    }

    private func openStore(_ network: String, _ dataDir: String?) throws(CNIError) -> DiskStore {
        do throws(IPAMError) {
            return try DiskStore(network: network, dataDir: dataDir)
        } catch {
            throw CNIError(.ioFailure, "failed to open the data directory: \(error)")
        }
    }

    /// Runs `body` holding the network's lock. An IPAM failure becomes a CNI error: I/O is code 5,
    /// everything else (pool exhausted, address taken) 999, as the reference reports it.
    private func locked<T>(_ store: DiskStore, _ body: () throws(IPAMError) -> T) throws(CNIError) -> T {
        do throws(IPAMError) {
            return try store.withLock(body)
        } catch {
            throw CNIError(error.isSystemError ? .ioFailure : .internal, error.description)
        }
    }
}
