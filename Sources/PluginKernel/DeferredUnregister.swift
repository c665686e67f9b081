// Deleting the pod's interface without making DEL wait for the kernel.
//
// Unregistering a network device (RTM_DELLINK) blocks the caller for 10-20 ms of RCU
// synchronisation on a typical node, longer than everything else DEL does together; the
// reference plugin and `ip link del` pay it too. A runtime only needs the attachment gone:
// CNI_IFNAME free for a new ADD, no address or traffic left on it. So DEL does the cheap part
// itself (addresses removed, link down, renamed to a "pdel…" tombstone: about 0.4 ms) and hands
// the unregister to a detached helper: this same executable, re-executed with the namespace
// open on fd 3 and the tombstone's index and name in PODNET_BRIDGE_UNREGISTER. The helper
// deletes the link only if it still carries that name. If the helper cannot be started, DEL
// deletes the link itself. If the namespace goes away first, the kernel deletes the link with it.

import NetNS
import Netlink

#if canImport(Glibc)
    import Glibc
#endif

public enum DeferredUnregister {
    static let variable = "PODNET_BRIDGE_UNREGISTER"

    /// The helper's argv[0]. The plugins' executable dispatches on the name it was run as, and
    /// answers to this one by calling `runIfRequested()`.
    public static let helperName = "podnet-unregister"

    /// Detaches `link` (in the namespace whose handle is `namespaceFD`, reached through `nl`) and
    /// deletes it in a detached helper, or right away when no helper can be started.
    static func detachAndDelete(_ link: Link, _ nl: any RouteSocket, namespaceFD: Int32) throws(NetlinkError) {
        for a in try nl.addresses(link: link.index, family: nil) {
            do { try nl.deleteAddress(a, link: link.index) } catch { if !error.isNotFound { throw error } }
        }
        let tombstone = "pdel" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        do {
            try nl.setLink(link.index, LinkChange(up: false))
            try nl.setLink(link.index, LinkChange(name: tombstone))
        } catch {
            try nl.deleteLink(link.index)  // could not detach: delete now
            return
        }
        if !spawnHelper(index: link.index, name: tombstone, netnsFD: namespaceFD) {
            try nl.deleteLink(link.index)
        }
    }

    /// Starts the helper: /proc/self/exe in a new session, stdio on /dev/null (a runtime waits
    /// for our stdout to close), the namespace on fd 3. Not waited for.
    private static func spawnHelper(index: Int32, name: String, netnsFD: Int32) -> Bool {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, netnsFD, 3)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(0x80))  // POSIX_SPAWN_SETSID
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(helperName), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("\(variable)=\(index):\(name)"), nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        return posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv, envp) == 0
    }

    /// Call first thing when the executable runs as `helperName`: when this process is the
    /// helper, deletes the tombstone and exits; otherwise returns at once.
    public static func runIfRequested() {
        guard let job = getenv(variable).map({ String(cString: $0) }) else { return }
        let parts = job.split(separator: ":")
        if parts.count == 2, let index = Int32(parts[0]),
            let netns = try? NetworkNamespace(path: "/proc/self/fd/3")
        {
            _ = try? netns.run {
                let nl = try NetlinkSession()
                if let l = try nl.link(index: index), l.name == parts[1] { try nl.deleteLink(index) }
            }
        }
        exit(0)
    }
}
