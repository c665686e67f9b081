// The live set: the container IDs a runtime still has, which are the IDs CNI was called with.
// A reservation held by any other ID is leaked.
//
// From a file (`--live FILE`, `-` for stdin): one ID per line, blank lines and `#` comments
// ignored (an ID never contains `#`). From the runtime (`--live-from-runtime`): CRI's sandbox
// IDs (`crictl pods -q --no-trunc`: a pod's sandbox ID is the CNI container ID) when crictl is on
// PATH, else podman's container IDs (`podman ps -a --no-trunc`). Both list every sandbox or
// container that exists, running or not, so nothing that still exists is called leaked.

import Spawn

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Why the live set could not be had; podnetctl then cannot tell what is leaked (exit status 2).
public struct LiveSetError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

enum LiveSet {
    /// The IDs of a live-set file's text: one per line, blank lines and `#` comments ignored.
    static func parse(_ bytes: [UInt8]) -> Set<String> {
        var ids = Set<String>()
        for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let id = content.trimmingPrefix(while: \.isWhitespace).reversed().drop(while: \.isWhitespace)
            if !id.isEmpty { ids.insert(String(id.reversed())) }
        }
        return ids
    }

    /// `--live FILE`: the file's IDs, or stdin's for `-`.
    static func fromFile(_ path: String, context: IPAMContext) throws(LiveSetError) -> Set<String> {
        if path == "-" { return parse(context.readStdin()) }
        do throws(SystemError) { return parse(try readFile(path)) } catch {
            throw LiveSetError("cannot read the live set: \(error)")
        }
    }

    /// The runtime's queries, in the order they are tried.
    static let runtimeQueries: [(program: String, arguments: [String])] = [
        ("crictl", ["pods", "-q", "--no-trunc"]),
        ("podman", ["ps", "-a", "--no-trunc", "--format", "{{.ID}}"]),
    ]

    /// `--live-from-runtime`: the first runtime of `runtimeQueries` found on PATH, asked for its IDs.
    static func fromRuntime(context: IPAMContext) throws(LiveSetError) -> Set<String> {
        let path = context.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for query in runtimeQueries {
            guard let executable = findExecutable(query.program, path: path) else { continue }
            let shown = ([query.program] + query.arguments).joined(separator: " ")
            let output: Spawn.Output
            do throws(Spawn.Failure) {
                output = try context.run(executable, [query.program] + query.arguments)
            } catch .launch(let errno) {
                throw LiveSetError("\(shown): cannot start \(executable): \(String(cString: strerror(errno)))")
            } catch {
                throw LiveSetError("\(shown): no answer within 30 s")
            }
            guard output.status == 0 else {
                let message =
                    String(decoding: output.stderr, as: UTF8.self).split(whereSeparator: \.isNewline)
                    .first.map { ": " + $0 } ?? ""
                throw LiveSetError("\(shown) failed (exit status \(output.status))\(message)")
            }
            return parse(output.stdout)
        }
        throw LiveSetError(
            "neither crictl nor podman is on PATH: give the live container IDs with --live FILE (one per line)")
    }

    /// The first `directory/name` on `path` that is an executable regular file.
    static func findExecutable(_ name: String, path: String) -> String? {
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = dir + "/" + name
            var st = stat()
            if stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }
}
