// `podnetctl ipam`: what host-local has reserved on this node, and which reservations belong to
// containers that are gone; `podnetctl ipam release --leaked` frees those the way CNI GC does.
//
// Exit status: 0 all fine (or no live set given), 1 leaks found (`ipam` only: like `check`, it is
// for scripts and monitoring), 2 cannot tell (the store or the live set could not be read);
// usage errors are swift-argument-parser's 64. An unreadable network makes the status 2 even
// when another network has leaks: the picture is incomplete.
//
// The run methods take an IPAMContext, so tests drive the parsed command in-process with their
// output captured; `run()` is the executable's entry with the real process's context.

import ArgumentParser
import IPAM

/// Where the stores are.
public struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: "host-local's data directory (ipam.dataDir).")
    public var dataDir: String = DiskStore.defaultDataDir

    @Option(name: .long, help: "Only this network (a directory under the data directory).")
    public var network: String?

    public init() {}
}

/// Where the live container IDs come from.
public struct LiveOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp("A file of live container IDs, one per line ('-' for stdin).", valueName: "file"))
    public var live: String?

    @Flag(name: .long, help: "Ask the runtime for the live IDs: crictl pods, else podman ps.")
    public var liveFromRuntime = false

    public init() {}

    public func validate() throws {
        if live != nil && liveFromRuntime { throw ValidationError("give --live or --live-from-runtime, not both") }
    }

    var given: Bool { live != nil || liveFromRuntime }

    /// The live set, or nil when none was asked for.
    func read(context: IPAMContext) throws(LiveSetError) -> Set<String>? {
        if let live { return try LiveSet.fromFile(live, context: context) }
        if liveFromRuntime { return try LiveSet.fromRuntime(context: context) }
        return nil
    }
}

public struct IPAMCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ipam",
        abstract: "List host-local's reservations and find the leaked ones.",
        discussion: """
            Every network directory under the data directory: each reserved IP, the container ID and \
            interface holding it, and, given the live container IDs, whether it is live or LEAKED. \
            Exit status: 0 fine, 1 leaks found, 2 cannot tell.
            """,
        subcommands: [Release.self])

    @OptionGroup public var store: StoreOptions
    @OptionGroup public var liveOptions: LiveOptions

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The network's CNI config (.conf or .conflist with host-local): show its ranges and their use.",
            valueName: "file"))
    public var config: String?

    @Flag(name: .long, help: "Print JSON (docs/podnetctl-ipam-json.md).")
    public var json = false

    public init() {}

    public func run() throws {
        let status = run(context: .system())
        if status != 0 { throw ExitCode(status) }
    }

    /// Lists the stores; returns the exit status.
    public func run(context: IPAMContext) -> Int32 {
        let live: Set<String>?
        do throws(LiveSetError) { live = try liveOptions.read(context: context) } catch {
            context.writeError("podnetctl ipam: \(error)\n")
            return 2
        }
        var rangeConfig: RangeConfig?
        if let config {
            do throws(ConfigError) {
                let bytes: [UInt8]
                do throws(SystemError) { bytes = try readFile(config) } catch { throw ConfigError(error.description) }
                rangeConfig = try RangeConfig(bytes: bytes)
            } catch {
                context.writeError("podnetctl ipam: cannot take the ranges from \(config): \(error)\n")
                return 2
            }
        }
        var listings: [NetworkListing]
        do throws(IPAMError) { listings = try Self.read(store) } catch {
            if json {
                context.write(IPAMOutput.json([], dataDir: store.dataDir, live: live, error: error.description))
            }
            context.writeError("podnetctl ipam: cannot list \(store.dataDir): \(error)\n")
            return 2
        }
        if let rangeConfig {
            for i in listings.indices where listings[i].network == rangeConfig.network {
                if case .success(let report) = listings[i].result {
                    listings[i].ranges = RangeUse.of(rangeConfig, reservations: report.reservations)
                }
            }
        }
        if json {
            context.write(IPAMOutput.json(listings, dataDir: store.dataDir, live: live, error: nil))
        } else {
            let palette = Palette(enabled: useColour(isTTY: context.isTTY, environment: context.environment))
            context.write(IPAMOutput.table(listings, live: live, palette: palette))
        }
        var status: Int32 = 0
        for listing in listings {
            switch listing.result {
            case .failure(let error):
                if !json { context.writeError("podnetctl ipam: network \(listing.network): \(error)\n") }
                status = 2
            case .success(let report):
                if let live, !report.leaked(live: live).isEmpty, status == 0 { status = 1 }
            }
        }
        return status
    }

    /// The networks to look at: `--network`, or every one under the data directory.
    static func networks(_ store: StoreOptions) throws(IPAMError) -> [String] {
        if let network = store.network { return [network] }
        return try StoreReport.networks(dataDir: store.dataDir)
    }

    /// Each network's reservations; one network's failure does not hide the others.
    static func read(_ store: StoreOptions) throws(IPAMError) -> [NetworkListing] {
        try networks(store).map { network in
            do throws(IPAMError) {
                return NetworkListing(
                    network: network, result: .success(try StoreReport.read(network: network, dataDir: store.dataDir)),
                    ranges: nil)
            } catch {
                return NetworkListing(network: network, result: .failure(error), ranges: nil)
            }
        }
    }
}

extension IPAMCommand {
    public struct Release: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Free the reservations of containers that are not live, as CNI GC does.",
            discussion: """
                Each network's lock is held while its reservations are read and freed, so a plugin \
                ADD running at the same time waits and is not disturbed. A live set is required; an \
                empty one (everything would be freed) is refused unless --allow-empty-live is given. \
                Exit status: 0 done, 2 a store or the live set could not be read or changed.
                """)

        @Flag(name: .long, help: "Free the leaked reservations (required: nothing else is released).")
        public var leaked = false

        @OptionGroup public var store: StoreOptions
        @OptionGroup public var liveOptions: LiveOptions

        @Flag(name: .long, help: "Show what would be freed; change nothing.")
        public var dryRun = false

        @Flag(name: .long, help: "Accept an empty live set: every reservation is then freed.")
        public var allowEmptyLive = false

        public init() {}

        public func validate() throws {
            if !leaked { throw ValidationError("release frees only leaked reservations: give --leaked") }
            if !liveOptions.given {
                throw ValidationError(
                    "release needs the live container IDs: give --live FILE or --live-from-runtime")
            }
        }

        public func run() throws {
            let status = run(context: .system())
            if status != 0 { throw ExitCode(status) }
        }

        /// Frees the leaked reservations; returns the exit status.
        public func run(context: IPAMContext) -> Int32 {
            let live: Set<String>
            do throws(LiveSetError) { live = try liveOptions.read(context: context) ?? [] } catch {
                context.writeError("podnetctl ipam release: \(error)\n")
                return 2
            }
            if live.isEmpty && !allowEmptyLive {
                context.writeError(
                    "podnetctl ipam release: the live set is empty, so every reservation would be freed; "
                        + "refusing (give --allow-empty-live if no container is running)\n")
                return 2
            }
            let networks: [String]
            do throws(IPAMError) { networks = try IPAMCommand.networks(store) } catch {
                context.writeError("podnetctl ipam release: cannot list \(store.dataDir): \(error)\n")
                return 2
            }
            var status: Int32 = 0
            let verb = dryRun ? "would release" : "released"
            for network in networks {
                let freed: [Reservation]
                do throws(IPAMError) {
                    freed = try StoreReport.releaseLeaked(
                        network: network, dataDir: store.dataDir, live: live, dryRun: dryRun,
                        whileLocked: context.whileLocked)
                } catch {
                    context.writeError("podnetctl ipam release: network \(network): \(error)\n")
                    status = 2
                    continue
                }
                for r in freed {
                    let owner = r.containerID.isEmpty ? "no owner" : r.containerID + (r.ifname.map { " " + $0 } ?? "")
                    context.write("\(network): \(verb) \(r.ip) (\(owner))\n")
                }
                context.write(
                    dryRun
                        ? "\(network): \(freed.count) leaked, nothing released (dry run)\n"
                        : "\(network): \(freed.count) released\n")
            }
            return status
        }
    }
}
