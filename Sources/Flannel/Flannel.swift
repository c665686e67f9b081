// The flannel meta plugin (flannel-io/cni-plugin): it creates nothing itself. ADD combines its
// config with subnet.env into a config for a delegate (bridge + host-local by default), saves that
// config under dataDir and runs the delegate; DEL replays the saved config to the delegate.
//
// Where podnet differs from the reference, on purpose:
// - DEL removes the saved config only after the delegate's DEL succeeded. The reference removes it
//   anyway (since flannel-io/cni-plugin 6f13a99), so a retried DEL never reaches host-local and
//   the IP leaks.
// - A saved config that is not a JSON object with a `type` (a truncated write by the reference, a
//   damaged disk) is not skipped with a log line, which leaks the veth, the rules and the IP: DEL
//   rebuilds the delegate config from the current flannel config (and subnet.env when readable)
//   and deletes through that. Bridge and host-local DEL need only the network name, `ipam.dataDir`
//   and whether to remove masquerade rules, none of which depends on the node's subnet; without
//   subnet.env, ipMasq defaults to true so the rules are removed if there are any.
// - A missing subnet.env fails ADD with code 11 (try again later: flanneld writes it once it holds
//   its lease) rather than 999, with the reference's message and hint.
// - STATUS (spec 1.1.0) answers code 50 while subnet.env is missing or unusable, then forwards
//   STATUS to the delegate. CHECK replays the saved config with the runtime's prevResult to the
//   delegate's CHECK. GC forwards to the delegate and then drops the saved configs of this
//   network's containers that are no longer valid attachments.

import CNI

public struct Flannel: CNIPlugin {
    public init() {}

    // MARK: ADD

    /// Saves the delegate config before the delegate runs, so that whatever the delegate did
    /// before failing can be undone by a later DEL; a failed ADD keeps the file for that reason.
    public func add(_ request: Request) throws -> Result {
        let conf = try FlannelConfig(request)
        let subnets: SubnetEnv
        do { subnets = try SubnetEnv.load(conf.subnetFile) } catch {
            throw error.cniError(error.isMissingFile ? .tryAgainLater : .internal)
        }
        let delegate = try conf.delegateConfig(subnets)
        let bytes = JSON.object(delegate).encoded()
        try conf.store.save(bytes, for: request.env.containerID)
        do {
            return try Delegate.add(delegate.pluginType, request: request, stdin: bytes)
        } catch {
            throw CNIError.wrap(error, "failed to delegate add")
        }
    }

    // MARK: DEL

    /// Replays the saved config to the delegate's DEL, then removes it. Nothing saved: success
    /// without calling the delegate (never added, or already deleted). Repeatable.
    public func del(_ request: Request) throws {
        let conf = try FlannelConfig(request)
        let id = request.env.containerID
        guard let saved = try conf.store.load(id) else { return }
        let type: String, stdin: [UInt8]
        if let object = Self.savedObject(saved) {
            (type, stdin) = (object.pluginType, saved)
        } else {
            let rebuilt = try rebuiltDelegateConfig(conf)
            logStderr(
                "flannel: the saved config \(try conf.store.path(for: id)) is damaged; deleting through the "
                    + "config rebuilt from the current flannel config: \(JSON.object(rebuilt).text)")
            (type, stdin) = (rebuilt.pluginType, JSON.object(rebuilt).encoded())
        }
        do {
            try Delegate.run(type, command: .del, request: request, stdin: stdin)
        } catch {
            // The saved config stays, so the runtime's retry reaches the delegate again.
            throw CNIError.wrap(error, "failed to delegate del")
        }
        try conf.store.remove(id)
    }

    /// The delegate config as ADD would build it now; without a usable subnet.env, the parts that
    /// come from it are left out and ipMasq defaults to true (removing rules that do not exist
    /// is harmless, leaving rules that do is not).
    private func rebuiltDelegateConfig(_ conf: FlannelConfig) throws(CNIError) -> [String: JSON] {
        let subnets = try? SubnetEnv.load(conf.subnetFile)
        var d = try conf.delegateConfig(subnets)
        if subnets == nil && d["ipMasq"] == nil { d["ipMasq"] = .bool(true) }
        return d
    }

    /// The saved config when it is a JSON object naming its plugin type, else nil.
    static func savedObject(_ bytes: [UInt8]) -> [String: JSON]? {
        guard let o = (try? JSON.parse(bytes))?.objectValue, !o.pluginType.isEmpty else { return nil }
        return o
    }

    // MARK: CHECK

    /// The saved config plus the runtime's prevResult, to the delegate's CHECK: the delegate
    /// checks what it created with the config it created it with.
    public func check(_ request: Request) throws {
        let conf = try FlannelConfig(request)
        let id = request.env.containerID
        guard let saved = try conf.store.load(id) else {
            throw CNIError(.internal, "flannel: no saved delegate config for container \(id) in \(conf.dataDir)")
        }
        guard var object = Self.savedObject(saved) else {
            throw CNIError(
                .decodingFailure, "flannel: the saved delegate config \(try conf.store.path(for: id)) is damaged")
        }
        if let (_, prev) = try request.config.member("prevResult") { object["prevResult"] = prev }
        do {
            try Delegate.run(object.pluginType, command: .check, request: request, stdin: JSON.object(object).encoded())
        } catch {
            throw CNIError.wrap(error, "failed to delegate check")
        }
    }

    // MARK: GC

    /// Forwards GC, with the runtime's list of valid attachments, to the delegate built as ADD
    /// builds it. What the delegates need: host-local GC only `name` and `ipam.dataDir`; bridge GC
    /// `name` (the masquerade rules are found by network and attachment) and a config that
    /// validates. Neither needs the node's subnet, so GC works while subnet.env is missing.
    /// After the delegate succeeded, the saved configs of this network's containers that are no
    /// longer valid are removed (the delegate has released what they held), and so are temporary
    /// files a crash left. A saved config of another network sharing dataDir is never touched.
    public func gc(_ request: Request) throws {
        let conf = try FlannelConfig(request)
        let subnets = try? SubnetEnv.load(conf.subnetFile)
        var delegate = try conf.delegateConfig(subnets)
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            if let (_, v) = try request.config.member(key) { delegate[key] = v }
        }
        do {
            try Delegate.run(
                delegate.pluginType, command: .gc, request: request, stdin: JSON.object(delegate).encoded())
        } catch {
            throw CNIError.wrap(error, "failed to delegate gc")
        }
        guard let valid = try request.validAttachments else { return }
        let live = Set(valid.map(\.containerID))
        let store = conf.store
        // Best effort past a file that cannot be read or removed; the first failure is reported.
        var failures: [CNIError] = []
        for id in try store.containerIDs() where !live.contains(id) {
            do {
                guard let bytes = try store.load(id), let saved = Self.savedObject(bytes),
                    saved["name"] == .string(request.name)
                else { continue }
                try store.remove(id)
                logStderr("flannel: GC removed the saved config of \(id)")
            } catch {
                failures.append(error)
            }
        }
        store.removeTemporaryFiles()
        if var first = failures.first {
            if failures.count > 1 { first.details = failures.dropFirst().map(\.description).joined(separator: "; ") }
            throw first
        }
    }

    // MARK: STATUS

    /// Code 50 while subnet.env is missing or unusable, or dataDir cannot be written; otherwise
    /// the delegate's STATUS (its error passed on).
    public func status(_ request: Request) throws {
        let conf = try FlannelConfig(request)
        let subnets: SubnetEnv
        do { subnets = try SubnetEnv.load(conf.subnetFile) } catch { throw error.cniError(.notAvailable) }
        try conf.store.checkWritable()
        let delegate = try conf.delegateConfig(subnets)
        do {
            try Delegate.run(
                delegate.pluginType, command: .status, request: request, stdin: JSON.object(delegate).encoded())
        } catch {
            throw CNIError.wrap(error, "delegate \(delegate.pluginType) is not available")
        }
    }
}
