// An in-memory IPAM Store for allocator tests: no files, no locking, and a record of what the
// allocator tried, so tests can assert the round-robin order.

import Addressing
import IPAM

public final class FakeStore: Store {
    /// Current reservations by address.
    public private(set) var held: [IPAddress: Reservation] = [:]
    /// The last address reserved per range-set index.
    public var lastReserved: [Int: IPAddress]
    /// Every address `reserve` was called with, in order, taken or not.
    public private(set) var attempts: [IPAddress] = []
    /// How many times the lock was taken; `isLocked` whether it is held now.
    public private(set) var lockCount = 0
    public private(set) var isLocked = false
    /// Addresses whose reservation fails with EIO, to exercise error paths.
    public var failingIPs: Set<IPAddress> = []

    public init(_ reservations: [Reservation] = [], lastReserved: [Int: IPAddress] = [:]) {
        for r in reservations { held[r.ip] = r }
        self.lastReserved = lastReserved
    }

    public func lock() throws(IPAMError) {
        precondition(!isLocked, "FakeStore locked twice")
        isLocked = true
        lockCount += 1
    }

    public func unlock() { isLocked = false }

    public func reserve(_ ip: IPAddress, id: String, ifname: String, rangeSetIndex: Int) throws(IPAMError) -> Bool {
        attempts.append(ip)
        if failingIPs.contains(ip) { throw .system(call: "open", path: ip.description, errno: 5) }
        if held[ip] != nil { return false }
        held[ip] = Reservation(ip: ip, containerID: id, ifname: ifname)
        lastReserved[rangeSetIndex] = ip
        return true
    }

    public func lastReservedIP(rangeSetIndex: Int) -> IPAddress? { lastReserved[rangeSetIndex] }

    @discardableResult
    public func release(id: String, ifname: String) throws(IPAMError) -> [IPAddress] {
        var ips = held.values.filter { $0.containerID == id && $0.ifname == ifname }.map(\.ip)
        if ips.isEmpty { ips = held.values.filter { $0.containerID == id && $0.ifname == nil }.map(\.ip) }
        for ip in ips { held[ip] = nil }
        return ips.sorted()
    }

    public func release(_ ip: IPAddress) throws(IPAMError) { held[ip] = nil }

    public func getByID(id: String, ifname: String) -> [IPAddress] {
        held.values.filter { $0.containerID == id && ($0.ifname == ifname || $0.ifname == nil) }.map(\.ip).sorted()
    }

    public func reservations() throws(IPAMError) -> [Reservation] {
        held.values.sorted { $0.ip < $1.ip }
    }

    /// The reserved addresses, sorted.
    public var reservedIPs: [IPAddress] { held.keys.sorted() }
}
