// Reading a whole host-local data directory for an operator (podnetctl ipam), and freeing the
// reservations of containers that no longer exist.
//
// Every subdirectory of the data directory is one network's store (DiskStore's layout). Each is
// read and changed under its flock, exactly as the plugin's ADD, DEL and GC are, so a listing
// never sees half an ADD and a release never races one: a concurrent ADD waits for the release
// and then finds the freed addresses free.
//
// A reservation is leaked when its container ID is not in the live set (IDs compare exactly).
// Freeing goes through `releaseAll(notHeldBy:)`, the same code CNI GC runs: the live set becomes
// the attachments it must keep, so a legacy reservation (container ID only) and an empty file left
// by a crash are judged as GC judges them.
//
// The store records no ranges; a caller that knows the network's config adds them itself.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One network's reservations as read under its lock.
public struct NetworkReport: Sendable, Equatable {
    /// The directory's name, which is the CNI network's name.
    public var network: String
    /// `<dataDir>/<network>`.
    public var directory: String
    /// Sorted by address (IPv4 before IPv6).
    public var reservations: [Reservation]

    public init(network: String, directory: String, reservations: [Reservation]) {
        self.network = network
        self.directory = directory
        self.reservations = reservations
    }

    /// The reservations whose container ID is not in `live`, in address order.
    public func leaked(live: Set<String>) -> [Reservation] {
        reservations.filter { !live.contains($0.containerID) }
    }
}

public enum StoreReport {
    /// The networks of a data directory: the names of its subdirectories, sorted. A data
    /// directory that is missing or unreadable is an error (the caller cannot tell what is held).
    /// The corresponding C functions are `opendir`, `readdir` and `stat`.
    public static func networks(dataDir: String) throws(IPAMError) -> [String] {
        guard let dir = opendir(dataDir) else { throw .system(call: "opendir", path: dataDir, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            // stat, not the entry's d_type: a symbolic link to a directory is a store too, and
            // d_type is DT_UNKNOWN on some file systems.
            var st = stat()
            guard stat(path(dataDir, name), &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { continue }
            names.append(name)
        }
        return names.sorted()
    }

    /// Reads one network's reservations with its lock held. The network's directory must exist
    /// (DiskStore would create it: a mistyped name must not leave an empty store behind).
    public static func read(network: String, dataDir: String) throws(IPAMError) -> NetworkReport {
        let store = try existingStore(network: network, dataDir: dataDir)
        let reservations = try store.withLock { () throws(IPAMError) in try store.reservations() }
        return NetworkReport(
            network: network, directory: store.directory, reservations: reservations.sorted { $0.ip < $1.ip })
    }

    /// Frees the reservations of `network` whose container ID is not in `live`, with the lock
    /// held from before the reservations are read until the last one is freed, and returns them
    /// in address order. `dryRun` returns what would be freed and frees nothing. `whileLocked`
    /// runs once the lock is held, before anything is read (tests use it to contend for the lock).
    public static func releaseLeaked(
        network: String, dataDir: String, live: Set<String>, dryRun: Bool = false,
        whileLocked: () -> Void = {}
    ) throws(IPAMError) -> [Reservation] {
        let store = try existingStore(network: network, dataDir: dataDir)
        let released = try store.withLock { () throws(IPAMError) -> [Reservation] in
            whileLocked()
            let all = try store.reservations()
            if dryRun { return all.filter { !live.contains($0.containerID) } }
            // GC's input: the attachments to keep. A live container's legacy reservation (no
            // ifname) is kept because its container ID is among them.
            let keep = Set(
                all.filter { live.contains($0.containerID) }.map {
                    Reservation.Owner(containerID: $0.containerID, ifname: $0.ifname ?? "")
                })
            return try store.releaseAll(notHeldBy: keep)
        }
        return released.sorted { $0.ip < $1.ip }
    }

    /// The store of a network directory that already exists.
    private static func existingStore(network: String, dataDir: String) throws(IPAMError) -> DiskStore {
        guard !network.isEmpty, !network.contains("/"), network != ".", network != ".." else {
            throw .invalidNetworkName(network)
        }
        let directory = path(dataDir, network)
        var st = stat()
        guard stat(directory, &st) == 0 else { throw .system(call: "stat", path: directory, errno: errno) }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw .system(call: "opendir", path: directory, errno: ENOTDIR) }
        return try DiskStore(network: network, dataDir: dataDir)
    }

    private static func path(_ dir: String, _ name: String) -> String {
        dir.hasSuffix("/") ? dir + name : dir + "/" + name
    }
}
