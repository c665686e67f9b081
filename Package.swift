// swift-tools-version:6.0
import PackageDescription

// What each target depends on is written down once, in README.md's dependency table (section
// Architecture), in layer order; scripts/check-structure.py checks that the table, these declarations
// and the sources' imports agree.
//
// CNI plugins are short-lived processes on every pod's start-up path: they use no Foundation at all
// (JSONValue parses and prints JSON itself) and no async runtime. scripts/build.sh links their
// release build as one fully static executable (glibc, Swift standard library, libstdc++, libnl),
// podnet-cni, installed as hard links named after the plugins it dispatches to.

let package = Package(
    name: "podnet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "podnet-cni", targets: ["podnet-cni"]),
        .executable(name: "podnetd", targets: ["podnetd"]),
        .executable(name: "podnetctl", targets: ["podnetctl"]),
    ],
    // Only podnetd uses these; the CNI plugins depend on none of them.
    dependencies: [
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibNL", pkgConfig: "libnl-route-3.0",
            providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]),
        .target(name: "Addressing"),
        .target(name: "Spawn"),
        .target(name: "JSONValue"),
        .target(name: "CNI", dependencies: ["Addressing", "Spawn", "JSONValue"]),
        .target(name: "CNetNS"),
        .target(name: "NetNS", dependencies: ["CNetNS"]),
        .target(name: "Netlink", dependencies: ["CLibNL", "Addressing"]),
        .target(name: "IPAM", dependencies: ["Addressing"]),
        .target(name: "Netfilter", dependencies: ["Addressing", "Spawn", "Netlink"]),
        .target(name: "PluginKernel", dependencies: ["Addressing", "Netlink", "NetNS"]),
        .target(name: "HostLocal", dependencies: ["CNI", "IPAM", "Addressing"]),
        .target(name: "Bridge", dependencies: ["CNI", "Netlink", "NetNS", "Netfilter", "PluginKernel", "Addressing"]),
        .target(name: "Loopback", dependencies: ["CNI", "Netlink", "PluginKernel", "Addressing"]),
        .target(name: "Portmap", dependencies: ["CNI", "Netfilter", "Netlink", "PluginKernel", "Addressing"]),
        .target(name: "Flannel", dependencies: ["CNI", "Addressing"]),
        // Every CNI plugin in one executable, dispatching on the name it is run as (argv[0]).
        .executableTarget(
            name: "podnet-cni",
            dependencies: ["Bridge", "HostLocal", "Loopback", "Portmap", "Flannel", "PluginKernel", "CNI"],
            path: "Plugins/podnet-cni"),
        // BGP-4 messages and the session state machine, pure (no I/O): the bgp backend's speaker.
        .target(name: "BGP", dependencies: ["Addressing"]),
        // The BGP sessions over SwiftNIO: a listener and one peer per neighbour, around BGP's state machine.
        .target(
            name: "BGPSpeaker",
            dependencies: [
                "BGP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "Etcd",
            dependencies: [
                "JSONValue",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "Overlay",
            dependencies: [
                "Netlink", "NetNS", "Addressing", "JSONValue",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The lease registry over etcd: the one place the overlay meets the etcd client.
        .target(
            name: "EtcdLeases",
            dependencies: [
                "Overlay", "Etcd", "Addressing",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // podnetctl's comparison of etcd's leases with this node's kernel (Overlay's inspection) and
        // its output: rows with verdicts, problems, 80-column tables, JSON.
        .target(name: "NodeCheck", dependencies: ["Overlay", "Addressing"]),
        // The daemon's logic as a library: start-up, lease keeper, peer watcher, repairer, health server.
        .target(
            name: "NodeAgent",
            dependencies: [
                "Overlay", "Netlink", "Addressing", "BGP", "BGPSpeaker",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .executableTarget(
            name: "podnetd",
            dependencies: [
                "NodeAgent", "EtcdLeases", "Overlay", "Etcd", "Netfilter", "Addressing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        // podnetctl's `ipam` subcommand: host-local's stores, leaks against a live set, release.
        .target(
            name: "PodnetctlIPAM",
            dependencies: [
                "IPAM", "Addressing", "Spawn", "JSONValue",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "podnetctl",
            dependencies: [
                "NodeCheck", "PodnetctlIPAM", "NodeAgent", "EtcdLeases", "Overlay", "Etcd", "Addressing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "TestSupport",
            dependencies: ["CNI", "IPAM", "Addressing", "Netlink", "NetNS", "PluginKernel", "Netfilter", "Overlay"]),
        // The fuzz targets' entry points (scripts/fuzz.sh builds them into libFuzzer binaries with
        // swiftc -sanitize=fuzzer); FuzzReplayTests feeds them the committed corpora and crashes.
        .target(
            name: "FuzzTargets", dependencies: ["CNI", "Bridge", "HostLocal", "Portmap", "Flannel", "Etcd", "Overlay"]),
        .testTarget(name: "AddressingTests", dependencies: ["Addressing"]),
        .testTarget(name: "BGPTests", dependencies: ["BGP", "Addressing"]),
        .testTarget(
            name: "BGPSpeakerTests",
            dependencies: [
                "BGPSpeaker", "BGP", "Addressing", "NetNS", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "CNITests", dependencies: ["CNI", "Addressing", "TestSupport"]),
        .testTarget(
            name: "IPAMTests", dependencies: ["IPAM", "HostLocal", "TestSupport", "Spawn", "Addressing", "CNI"]),
        // `podnetctl ipam` in-process against stores in temporary directories: no root.
        .testTarget(
            name: "PodnetctlIPAMTests",
            dependencies: [
                "PodnetctlIPAM", "IPAM", "Addressing", "JSONValue", "TestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(
            name: "NetfilterTests",
            dependencies: ["Netfilter", "Netlink", "NetNS", "Spawn", "Addressing", "TestSupport"]),
        .testTarget(name: "PluginTests", dependencies: ["TestSupport"]),
        // Bridge, Loopback and Portmap in-process against TestSupport's in-memory kernel, fake IPAM and
        // a recording command runner: no root.
        .testTarget(
            name: "PluginUnitTests",
            dependencies: ["Bridge", "Loopback", "Portmap", "CNI", "Netfilter", "Netlink", "Addressing", "TestSupport"]),
        .testTarget(name: "PortmapTests", dependencies: ["Portmap", "Netfilter", "CNI", "TestSupport", "Addressing"]),
        .testTarget(name: "FlannelTests", dependencies: ["Flannel", "CNI", "TestSupport", "Addressing"]),
        .testTarget(name: "EtcdTests", dependencies: ["Etcd", "TestSupport"]),
        .testTarget(
            name: "LeaseTests",
            dependencies: [
                "Overlay", "EtcdLeases", "Etcd", "Addressing", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The daemon's services in-process, without root: the in-memory registry, the fake kernel, a manual clock.
        .testTarget(
            name: "NodeAgentTests",
            dependencies: [
                "NodeAgent", "Overlay", "Netlink", "Addressing", "TestSupport", "BGP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        // End to end: the built podnetd, flannel, bridge and host-local in simulated nodes with a real etcd.
        .testTarget(name: "DaemonTests", dependencies: ["TestSupport", "NodeAgent", "Addressing"]),
        // The built plugins as real runtimes run them: entered with setns (nsenter --net, no /sys remount).
        .testTarget(name: "RuntimeTests", dependencies: ["TestSupport"]),
        .testTarget(name: "FuzzReplayTests", dependencies: ["FuzzTargets"]),
        // The comparison and its output against the fake kernel, without root; golden tables in golden/.
        .testTarget(
            name: "NodeCheckTests",
            dependencies: [
                "NodeCheck", "Overlay", "Netlink", "NetNS", "Addressing", "JSONValue", "TestSupport",
            ], exclude: ["golden"]),
        .testTarget(
            name: "OverlayTests",
            dependencies: ["Overlay", "Netlink", "NetNS", "Addressing", "TestSupport", "NodeAgent"]),
    ]
)
