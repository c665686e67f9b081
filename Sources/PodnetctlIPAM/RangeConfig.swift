// The ranges of a network, read from its CNI config (`podnetctl ipam --config FILE`): the store
// records only who holds which address, not what it allocates from.
//
// A .conf's `ipam`, or in a .conflist the first plugin whose `ipam.type` is host-local; of that
// section `ipam.ranges` and the legacy `ipam.subnet`/`rangeStart`/`rangeEnd`/`gateway`, which
// host-local puts first (runtimeConfig.ipRanges come from the runtime at ADD and cannot be known
// here). A flannel config has no ipam section: its ranges come from subnet.env at ADD time, so it
// is refused with a message saying so.

import Addressing
import IPAM
import JSONValue

/// Why a config gave no ranges.
struct ConfigError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A network's range sets as its config declares them.
struct RangeConfig: Equatable {
    /// The config's `name`: the network whose directory these ranges belong to.
    var network: String
    var rangeSets: [IPRangeSet]

    /// Reads a .conf or .conflist; the message of a failure says what is wrong.
    init(bytes: [UInt8]) throws(ConfigError) {
        let json: JSON
        do throws(JSONSyntaxError) { json = try JSON(parsing: bytes) } catch {
            throw ConfigError("not JSON: \(error)")
        }
        guard let name = json["name"]?.stringValue, !name.isEmpty else { throw ConfigError("no \"name\"") }
        network = name
        let sections = [json] + (json["plugins"]?.arrayValue ?? [])
        guard
            let ipam = sections.lazy.compactMap({ $0["ipam"] }).first(where: {
                $0["type"]?.stringValue == "host-local"
            })
        else {
            throw ConfigError("no host-local ipam section (a flannel config takes its ranges from subnet.env)")
        }
        var raw: [[JSON]] = []
        if let subnet = ipam["subnet"]?.stringValue, !subnet.isEmpty { raw.append([ipam]) }
        for set in ipam["ranges"]?.arrayValue ?? [] { raw.append(set.arrayValue ?? [set]) }
        guard !raw.isEmpty else { throw ConfigError("no IP ranges specified") }
        rangeSets = []
        for (i, set) in raw.enumerated() {
            let fail = { (why: String) in ConfigError("invalid range set \(i): \(why)") }
            var ranges: [IPRange] = []
            for r in set { ranges.append(try Self.range(r, fail: fail)) }
            do throws(IPAMError) { rangeSets.append(try IPRangeSet(ranges)) } catch { throw fail(error.description) }
        }
    }

    /// One `{subnet, rangeStart?, rangeEnd?, gateway?}`, with host-local's defaults.
    private static func range(_ json: JSON, fail: (String) -> ConfigError) throws(ConfigError) -> IPRange {
        func address(_ key: String) throws(ConfigError) -> IPAddress? {
            guard let s = json[key]?.stringValue, !s.isEmpty else { return nil }
            guard let ip = IPAddress(s.split(separator: "/")[0]) else { throw fail("invalid IP address: \(s)") }
            return ip
        }
        let text = json["subnet"]?.stringValue ?? ""
        guard let subnet = IPNetwork(text) else { throw fail("invalid CIDR address: \(text)") }
        let start = try address("rangeStart"), end = try address("rangeEnd"), gateway = try address("gateway")
        do throws(IPAMError) {
            return try IPRange(subnet: subnet, rangeStart: start, rangeEnd: end, gateway: gateway)
        } catch {
            throw fail(error.description)
        }
    }
}

/// How much of one range is in use.
struct RangeUse: Equatable {
    var rangeSet: Int
    var range: IPRange
    /// The addresses host-local can hand out: rangeStart...rangeEnd without the gateway; nil when
    /// more than Int64 can count (an IPv6 /64).
    var size: Int64?
    var used: Int

    /// Each range of `config` with the reservations that fall in it.
    static func of(_ config: RangeConfig, reservations: [Reservation]) -> [RangeUse] {
        var out: [RangeUse] = []
        for (i, set) in config.rangeSets.enumerated() {
            for r in set.ranges {
                var count = r.rangeEnd.value - r.rangeStart.value + 1
                if r.contains(r.gateway) { count -= 1 }
                out.append(
                    RangeUse(
                        rangeSet: i, range: r, size: Int64(exactly: count),
                        used: reservations.filter { r.contains($0.ip) }.count))
            }
        }
        return out
    }
}
