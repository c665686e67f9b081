// Temporary directories for tests that write stores and files: made with mkdtemp, removed whole
// afterwards, whatever the body does.

#if canImport(Glibc)
    import Glibc
#endif

/// Runs `body` with a fresh directory under /tmp and removes it afterwards, whatever happens.
public func withTempDir<T>(_ body: (String) throws -> T) throws -> T {
    var template = Array("/tmp/podnet-test-XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw TestFailure("mkdtemp: errno \(errno)")
    }
    let dir = String(cString: made)
    defer { removeTree(dir) }
    return try body(dir)
}

/// `rm -rf path` (no symlinks are followed: lstat decides what is a directory).
public func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if st.st_mode & S_IFMT == S_IFDIR {
        for name in listDir(path) { removeTree(path + "/" + name) }
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// Names in a directory, sorted, without "." and "..".
public func listDir(_ path: String) -> [String] {
    guard let d = opendir(path) else { return [] }
    defer { closedir(d) }
    var out: [String] = []
    while let e = readdir(d) {
        let name = withUnsafePointer(to: &e.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if name != "." && name != ".." { out.append(name) }
    }
    return out.sorted()
}
