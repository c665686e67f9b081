// Where reservations live. The allocator needs only "reserve this address if it is free", "what
// did I reserve last in this range set" and "who holds what"; DiskStore keeps them in files the
// Go host-local reads and writes too, FakeStore (TestSupport) in memory.

import Addressing

/// One reserved address and its owner.
public struct Reservation: Hashable, Sendable, CustomStringConvertible {
    /// An attachment as the spec names it: (CNI_CONTAINERID, CNI_IFNAME).
    public struct Owner: Hashable, Sendable {
        public var containerID: String
        public var ifname: String
        public init(containerID: String, ifname: String) {
            self.containerID = containerID
            self.ifname = ifname
        }
    }

    public var ip: IPAddress
    public var containerID: String
    /// Nil for legacy reservations, written before host-local recorded the interface.
    public var ifname: String?

    public init(ip: IPAddress, containerID: String, ifname: String?) {
        self.ip = ip
        self.containerID = containerID
        self.ifname = ifname
    }

    /// Whether `owner` holds this reservation; a legacy one is held by every interface of its
    /// container.
    public func isHeld(by owner: Owner) -> Bool {
        containerID == owner.containerID && (ifname == nil || ifname == owner.ifname)
    }

    public var description: String { "\(ip) (\(containerID)\(ifname.map { "/" + $0 } ?? ""))" }
}

/// Reservation storage for one network. Callers hold `lock()` around every sequence of calls that
/// must see a consistent state (a whole ADD, DEL, CHECK or GC): the methods themselves do not lock.
public protocol Store: AnyObject {
    /// Takes the network's exclusive lock, waiting for it.
    func lock() throws(IPAMError)
    func unlock()

    /// Reserves `ip` for the attachment if nobody holds it, and records it as the last address
    /// reserved in range set `rangeSetIndex`. False when the address is taken.
    func reserve(_ ip: IPAddress, id: String, ifname: String, rangeSetIndex: Int) throws(IPAMError) -> Bool

    /// The address last reserved in range set `rangeSetIndex`, if known.
    func lastReservedIP(rangeSetIndex: Int) -> IPAddress?

    /// Releases every address held by id+ifname. If there is none, releases the legacy
    /// reservations of `id` instead. Returns what was released; nothing held is not an error.
    @discardableResult
    func release(id: String, ifname: String) throws(IPAMError) -> [IPAddress]

    /// Releases one address whoever holds it; releasing a free address is not an error.
    func release(_ ip: IPAddress) throws(IPAMError)

    /// The addresses held by id+ifname, and the legacy reservations of `id`.
    func getByID(id: String, ifname: String) -> [IPAddress]

    /// Every reservation, in no particular order.
    func reservations() throws(IPAMError) -> [Reservation]
}

extension Store {
    /// Runs `body` with the lock held.
    public func withLock<T>(_ body: () throws(IPAMError) -> T) throws(IPAMError) -> T {
        try lock()
        defer { unlock() }
        return try body()
    }

    /// Garbage collection: releases every reservation not held by one of `valid`, and returns the
    /// released ones. A legacy reservation (container ID only) is kept while any valid attachment
    /// has that container ID. A reservation file with no owner at all (left empty by a crash
    /// between create and write) is released. Continues past failures and reports them together.
    /// The caller holds the lock.
    @discardableResult
    public func releaseAll(notHeldBy valid: Set<Reservation.Owner>) throws(IPAMError) -> [Reservation] {
        let containers = Set(valid.map(\.containerID))
        var released: [Reservation] = []
        var errors: [IPAMError] = []
        for r in try reservations() {
            let kept =
                if let ifname = r.ifname {
                    valid.contains(Reservation.Owner(containerID: r.containerID, ifname: ifname))
                } else {
                    containers.contains(r.containerID)
                }
            if kept { continue }
            do throws(IPAMError) {
                try release(r.ip)
                released.append(r)
            } catch {
                errors.append(error)
            }
        }
        if !errors.isEmpty { throw errors.count == 1 ? errors[0] : .several(errors) }
        return released
    }
}
