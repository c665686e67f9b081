// Choosing the external interface, as flanneld does (main.go, pkg/ipmatch, pkg/ip):
//
// - None of `--iface`, `--iface-regex`, `--iface-can-reach` given: with `--public-ip`, the
//   interface holding that address, and an error when none holds it (a node behind NAT names its
//   interface with `--iface`); without it, the interface of the IPv4 default route.
// - Otherwise the first that gives an interface of: each `--iface` in order (an IP address selects
//   the link holding it, anything else is a link name); each `--iface-regex` in order, matched
//   against every link's usable IPv4 addresses and then, if none matched, against every link's
//   name; `--iface-can-reach`, the output device of the kernel's route to it (`ip route get`).
//   A value that gives nothing is logged and the next one is tried; when all fail the error lists
//   them all.
//
// The address advertised with the interface is the one that selected it (an `--iface` IP, an
// address a regex matched, the source the kernel would use towards `--iface-can-reach`), else the
// link's preferred IPv4 address (`ExternalInterface.preferredAddresses`: global before link-local,
// not deprecated, permanent first).
//
// Regular expressions are searched for, not anchored, as Go's `MatchString`: `eth` matches `eth0`.
// Two differences from flanneld, both where flanneld gives up for no good reason: a link whose
// name matches but has no usable address is skipped (flanneld stops at it and fails that regex),
// and a regex that does not compile is an error straight away instead of being skipped.
//
// Links are taken in index order (Go's `net.Interfaces`). The links and their addresses are read
// once (two dumps); only `--iface-can-reach` asks the kernel again.
//
// With IPv6 (the config's EnableIPv6), the interface is chosen as above by its IPv4 addresses, and
// it must also have a global IPv6 address (its preferred one is advertised) unless `--public-ipv6`
// is given; in an IPv6-only cluster (EnableIPv4 false) everything above works on IPv6 addresses,
// `--public-ipv6` takes the place of `--public-ip` and the default is the IPv6 default route's
// interface.

import Addressing
import Logging
import Netlink
import Overlay

extension NodeAgent {
    /// The interface overlay traffic leaves through, with addresses of `families` (the config's),
    /// chosen from the options as the file's note describes. Throws `NoInterface` when the options
    /// name no usable interface. Blocking (netlink).
    public func findInterface(families: [IPFamily] = [.v4]) throws -> ExternalInterface {
        try options.findInterface(dataPath: dataPath, logger: logger, families: families)
    }
}

extension NodeAgent.Options {
    /// The interface these options choose (`NodeAgent.findInterface`), for a tool that runs no
    /// agent; each option value that matched no usable interface is logged to `logger`.
    public func findInterface(dataPath: any DataPath, logger: Logger, families: [IPFamily] = [.v4]) throws
        -> ExternalInterface
    {
        let family: IPFamily = families.contains(.v4) ? .v4 : .v6
        let links = try InterfaceCandidates(dataPath: dataPath, family: family)
        let found = try findInterface(links, dataPath: dataPath, logger: logger)
        guard family == .v4, families.contains(.v6) else { return found }
        // Dual stack: the IPv4 choice, with the link's IPv6 address.
        var dual = found
        dual.ipv6Address = links.usable(links.links.first { $0.index == found.index }!, family: .v6).first?.network
        dual.publicIPv6 = publicIPv6 ?? dual.ipv6Address?.address
        guard dual.publicIPv6 != nil else {
            throw OverlayError.interfaceNotFound(
                "EnableIPv6 is set but \(found.name) has no global IPv6 address; pass --public-ipv6 or --iface")
        }
        return dual
    }

    private func findInterface(_ links: InterfaceCandidates, dataPath: any DataPath, logger: Logger) throws
        -> ExternalInterface
    {
        let o = self
        let (publicIP, publicFlag) = links.family == .v4 ? (o.publicIP, "--public-ip") : (o.publicIPv6, "--public-ipv6")
        guard !o.interfaces.isEmpty || !o.interfaceRegexes.isEmpty || o.interfaceCanReach != nil else {
            guard let publicIP else {
                return try ExternalInterface.find(publicIP: nil, families: [links.family], dataPath: dataPath)
            }
            switch links.holding(publicIP, publicIP: publicIP) {
            case .success(let found): return found
            case .failure(let reason):
                throw NoInterface([.init(flag: publicFlag, value: "\(publicIP)", reason: reason.text)])
            }
        }

        var failures: [NoInterface.Attempt] = []
        func attempt(_ flag: String, _ value: String, _ result: Result<ExternalInterface, Rejection>)
            -> ExternalInterface?
        {
            switch result {
            case .success(let found): return found
            case .failure(let reason):
                logger.info(
                    "no usable interface for \(flag) \(value): \(reason.text)",
                    metadata: ["node.interface_option": "\(flag)", "node.interface_value": "\(value)"])
                failures.append(.init(flag: flag, value: value, reason: reason.text))
                return nil
            }
        }

        for entry in o.interfaces {
            let result =
                if let ip = IPAddress(entry) {
                    links.holding(ip, publicIP: publicIP)
                } else {
                    links.named(entry, publicIP: publicIP)
                }
            if let found = attempt("--iface", entry, result) { return found }
        }
        for pattern in o.interfaceRegexes {
            let regex: Regex<AnyRegexOutput>
            do { regex = try Regex(pattern) } catch {
                throw NoInterface([
                    .init(flag: "--iface-regex", value: pattern, reason: "not a valid regular expression: \(error)")
                ])
            }
            if let found = attempt("--iface-regex", pattern, links.matching(regex, publicIP: publicIP)) {
                return found
            }
        }
        if let target = o.interfaceCanReach {
            let result = links.reaching(target, publicIP: publicIP, dataPath: dataPath)
            if let found = attempt("--iface-can-reach", "\(target)", result) { return found }
        }
        throw NoInterface(failures)
    }
}

/// No interface matches what the options ask for. `attempts` says, for each option value tried
/// in order, why it gave none.
public struct NoInterface: Error, CustomStringConvertible {
    /// One option value and why it gave no interface.
    public struct Attempt: Equatable, Sendable, CustomStringConvertible {
        /// The command-line flag, e.g. `--iface`.
        public var flag: String
        public var value: String
        public var reason: String

        public init(flag: String, value: String, reason: String) {
            self.flag = flag; self.value = value; self.reason = reason
        }

        /// `--iface 10.9.9.9: no interface has this address`.
        public var description: String { "\(flag) \(value): \(reason)" }
    }

    public var attempts: [Attempt]

    public init(_ attempts: [Attempt]) { self.attempts = attempts }

    public var description: String {
        switch attempts.count {
        case 0: "no interface to use"
        case 1: attempts[0].description
        default: "no interface to use: " + attempts.map(\.description).joined(separator: "; ")
        }
    }
}

/// Why one option value gave no interface.
struct Rejection: Error {
    var text: String
    init(_ text: String) { self.text = text }
}

/// The links and their addresses, read once, and the ways the options pick among them by their
/// addresses of `family`.
struct InterfaceCandidates {
    /// In index order.
    let links: [Link]
    /// Every address of every link, with flags, in the kernel's order.
    let addresses: [InterfaceAddress]
    /// The family the choice is made by.
    let family: IPFamily

    init(dataPath: any DataPath, family: IPFamily = .v4) throws {
        links = try dataPath.links().sorted { $0.index < $1.index }
        addresses = try dataPath.interfaceAddresses(family: nil)
        self.family = family
    }

    private var familyName: String { family == .v4 ? "IPv4" : "IPv6" }

    /// The usable addresses of `link` of `family` (the candidates' when nil), best first.
    func usable(_ link: Link, family: IPFamily? = nil) -> [InterfaceAddress] {
        ExternalInterface.preferredAddresses(
            addresses.filter { $0.interface == link.index }, family: family ?? self.family)
    }

    /// `link` with `address`, or with its preferred address when nil.
    func use(_ link: Link, address: IPNetwork?, publicIP: IPAddress?) -> Result<ExternalInterface, Rejection> {
        guard let address = address ?? usable(link).first?.network else {
            return .failure(Rejection("interface \(link.name) has no usable \(familyName) address"))
        }
        do {
            return .success(try ExternalInterface.using(link, address: address, publicIP: publicIP))
        } catch {
            return .failure(Rejection(error.description))
        }
    }

    /// The link holding `ip` (any of its IPv4 addresses, usable or not, as flanneld's
    /// GetInterfaceByIP), with that address.
    func holding(_ ip: IPAddress, publicIP: IPAddress?) -> Result<ExternalInterface, Rejection> {
        guard ip.family == family else { return .failure(Rejection("not an \(familyName) address")) }
        let holders = Set(addresses.filter { $0.network.address == ip }.map(\.interface))
        guard let link = links.first(where: { holders.contains($0.index) }),
            let held = addresses.first(where: { $0.interface == link.index && $0.network.address == ip })
        else { return .failure(Rejection("no interface has this address")) }
        return use(link, address: held.network, publicIP: publicIP)
    }

    /// The link named `name`.
    func named(_ name: String, publicIP: IPAddress?) -> Result<ExternalInterface, Rejection> {
        guard let link = links.first(where: { $0.name == name }) else {
            return .failure(Rejection("no interface has this name"))
        }
        return use(link, address: nil, publicIP: publicIP)
    }

    /// The first link with a usable address `regex` matches (with that address), else the first
    /// link with a usable address whose name it matches.
    func matching(_ regex: Regex<AnyRegexOutput>, publicIP: IPAddress?) -> Result<ExternalInterface, Rejection> {
        for link in links {
            if let a = usable(link).first(where: { $0.network.address.description.contains(regex) }) {
                return use(link, address: a.network, publicIP: publicIP)
            }
        }
        for link in links where link.name.contains(regex) && !usable(link).isEmpty {
            return use(link, address: nil, publicIP: publicIP)
        }
        let available = links.map { l in
            "\(l.name) [\(usable(l).map { "\($0.network.address)" }.joined(separator: " "))]"
        }
        return .failure(
            Rejection(
                "matches no address and no name of an interface with an \(familyName) address (\(available.joined(separator: ", ")))"
            ))
    }

    /// The link the kernel would send to `target` through, with the source address it would
    /// use (when that is an address of this host), else the link's preferred address.
    func reaching(_ target: IPAddress, publicIP: IPAddress?, dataPath: any DataPath) -> Result<
        ExternalInterface, Rejection
    > {
        let route: RouteLookup
        do { route = try dataPath.lookupRoute(to: target) } catch {
            return .failure(Rejection("no route: \(error)"))
        }
        guard let index = route.interface, let link = links.first(where: { $0.index == index }) else {
            return .failure(Rejection("the route to it has no output interface"))
        }
        let source = route.source.flatMap { s in
            addresses.first { $0.network.address == s && s.family == family }?.network
        }
        return use(link, address: source, publicIP: publicIP)
    }
}
