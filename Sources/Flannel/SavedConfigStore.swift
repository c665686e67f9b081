// The delegate configs saved by ADD for DEL to replay: `<dataDir>/<containerID>` holding the exact
// JSON the delegate got (the reference's layout, so either implementation can DEL what the other
// added). Keyed by container ID only, as the reference does.
//
// Writes are durable and atomic: the bytes go to `<dataDir>/.<containerID>.tmp`, which is fsynced
// and renamed over the final name, and then the directory is fsynced. A file name holds at most
// 255 bytes and a container ID may use all of them, so for IDs longer than 250 bytes the
// temporary name keeps the ID's first 233 bytes and adds a 64-bit hash of the whole ID. A crash leaves either the
// old file or the new one, never a truncated one (the reference writes in place with O_TRUNC).
//
// A container ID becomes a file name only after `path(for:)` has checked it: the CNI rule
// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (no "/", and neither "." nor ".."), so no ID can name anything
// but a direct child of the directory. CNIEnvironment checks the same rule before a plugin runs;
// this is the second line of defence, for callers that build a store directly.

import CNI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public struct SavedConfigStore: Sendable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    /// `<directory>/<containerID>`, or code 4 when the ID could name anything else.
    public func path(for containerID: String) throws(CNIError) -> String {
        guard !containerID.isEmpty, !containerID.contains("/"), !containerID.utf8.contains(0),
            containerID != ".", containerID != "..", CNIEnvironment.isValidName(containerID)
        else {
            throw CNIError(.invalidEnvironment, "invalid characters in containerID", details: containerID)
        }
        return child(containerID)
    }

    /// The temporary name a save writes first: `.<containerID>.tmp`, or for an ID too long for
    /// that, `.<first 233 bytes>-<FNV-1a hash of the ID, 16 hex digits>.tmp` (255 bytes). A leading
    /// "." can never start a container ID, so no temporary name is a saved config's name.
    func temporaryPath(for containerID: String) throws(CNIError) -> String {
        _ = try path(for: containerID)
        let plain = "." + containerID + ".tmp"
        if plain.utf8.count <= Self.maxNameLength { return child(plain) }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in containerID.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let hex = String(hash, radix: 16)
        let digits = String(repeating: "0", count: 16 - hex.count) + hex
        let kept = Self.maxNameLength - ".".count - "-".count - 16 - ".tmp".count
        return child("." + String(decoding: containerID.utf8.prefix(kept), as: UTF8.self) + "-" + digits + ".tmp")
    }

    /// NAME_MAX: the longest file name Linux file systems take, in bytes.
    static let maxNameLength = 255

    private func child(_ name: String) -> String {
        (directory.hasSuffix("/") ? directory : directory + "/") + name
    }

    /// Saves `bytes` for `containerID`, replacing an earlier save: directory (mode 0700) created
    /// as needed, file mode 0600, durable before this returns.
    public func save(_ bytes: [UInt8], for containerID: String) throws(CNIError) {
        let final = try path(for: containerID)
        let temp = try temporaryPath(for: containerID)
        guard bytes.count <= Self.sizeLimit else {
            throw CNIError(.invalidNetworkConfig, "the delegate config is larger than \(Self.sizeLimit) bytes")
        }
        try makeDirectories(directory)
        // O_NOFOLLOW: a symlink planted at the temporary name is not followed.
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw failure("open", temp) }
        var ok = false
        defer { if !ok { unlink(temp) } }
        do {
            defer { close(fd) }
            // The umask may have removed bits, never added any; set the mode exactly.
            guard fchmod(fd, 0o600) == 0 else { throw failure("fchmod", temp) }
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
                if n > 0 { off += n } else if n < 0 && errno == EINTR { continue } else { throw failure("write", temp) }
            }
            guard fsync(fd) == 0 else { throw failure("fsync", temp) }
        }
        guard rename(temp, final) == 0 else { throw failure("rename", final) }
        ok = true
        try syncDirectory()
    }

    /// The most a saved config may hold; `save` refuses more, so only a file put there by
    /// something else can be larger.
    public static let sizeLimit = 1024 * 1024

    /// The saved bytes, or nil when nothing is saved for `containerID`. Something there that
    /// cannot be a saved config (a FIFO, a device, a directory, more than `sizeLimit` bytes) is
    /// not read, which could block or exhaust memory: it reads as empty, i.e. as a damaged save,
    /// which DEL replaces by the config rebuilt from the current one (and then removes).
    public func load(_ containerID: String) throws(CNIError) -> [UInt8]? {
        let p = try path(for: containerID)
        do throws(BoundedFile.Failure) {
            return try BoundedFile.contents(p, limit: Self.sizeLimit, noFollow: true)
        } catch {
            switch error {
            case .system(_, _, ENOENT): return nil
            case .system(let call, _, let e):
                throw CNIError(.ioFailure, "\(call) \(p): \(String(cString: strerror(e)))")
            case .notRegularFile, .tooLarge:
                logStderr("flannel: ignoring the saved config: \(error)")
                return []
            }
        }
    }

    /// Removes the saved config; one that is already gone is fine.
    public func remove(_ containerID: String) throws(CNIError) {
        let p = try path(for: containerID)
        guard unlink(p) == 0 || errno == ENOENT else { throw failure("unlink", p) }
    }

    /// The container IDs that have a saved config (names that are not container IDs are skipped).
    public func containerIDs() throws(CNIError) -> [String] {
        try entries().filter(CNIEnvironment.isValidName).sorted()
    }

    /// Removes temporary files a crashed save left behind. Only for GC, which never runs
    /// concurrently with ADD, so no save can be in progress.
    public func removeTemporaryFiles() {
        for name in (try? entries()) ?? [] where name.hasPrefix(".") && name.hasSuffix(".tmp") {
            unlink(child(name))
        }
    }

    /// Code 50 unless saves can succeed: the directory, when it exists, must be a writable
    /// directory (a read-only file system fails here). A missing one is created by the first save.
    public func checkWritable() throws(CNIError) {
        var st = stat()
        guard stat(directory, &st) == 0 else {
            if errno == ENOENT { return }
            throw CNIError(.notAvailable, "flannel data directory \(directory): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw CNIError(.notAvailable, "flannel data directory \(directory) is not a directory")
        }
        guard access(directory, W_OK | X_OK) == 0 else {
            throw CNIError(
                .notAvailable,
                "flannel data directory \(directory) is not writable: \(String(cString: strerror(errno)))")
        }
    }

    // MARK: - Helpers

    private func entries() throws(CNIError) -> [String] {
        guard let dir = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw failure("opendir", directory)
        }
        defer { closedir(dir) }
        var out: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    /// mkdir -p with mode 0700 for every directory it creates (os.MkdirAll(dataDir, 0700)).
    private func makeDirectories(_ path: String) throws(CNIError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST { throw failure("mkdir", prefix) }
        }
        var st = stat()
        guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw CNIError(.ioFailure, "flannel data directory \(path) is not a directory")
        }
    }

    /// fsync on the directory makes the rename itself durable.
    private func syncDirectory() throws(CNIError) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open", directory) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw failure("fsync", directory) }
    }

    private func failure(_ call: String, _ path: String) -> CNIError {
        CNIError(.ioFailure, "\(call) \(path): \(String(cString: strerror(errno)))")
    }
}
