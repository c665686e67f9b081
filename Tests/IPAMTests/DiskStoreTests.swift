// The disk store's files, byte for byte and mode for mode, as the Go host-local writes them, and
// its lock, which must be a flock(2) on `<dir>/lock`.

import Addressing
import IPAM
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct DiskStoreTests {
    @Test func reservationFilesMatchTheReferenceFormat() throws {
        try withTempDir { tmp in
            let store = try DiskStore(network: "net1", dataDir: tmp + "/nested/data")
            let dir = tmp + "/nested/data/net1"
            #expect(store.directory == dir)
            #expect(try store.reserve(ip("10.0.0.2"), id: "ctr1", ifname: "eth0", rangeSetIndex: 0))
            #expect(try store.reserve(ip("fd00::2"), id: "ctr1", ifname: "eth0", rangeSetIndex: 1))

            #expect(listDir(dir) == ["10.0.0.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"])
            #expect(fileBytes(dir + "/10.0.0.2") == Array("ctr1\r\neth0".utf8))
            #expect(fileBytes(dir + "/fd00::2") == Array("ctr1\r\neth0".utf8))
            #expect(fileBytes(dir + "/last_reserved_ip.0") == Array("10.0.0.2".utf8))
            #expect(fileBytes(dir + "/last_reserved_ip.1") == Array("fd00::2".utf8))
            #expect(fileBytes(dir + "/lock") == [])

            let mask = currentUmask()
            #expect(fileMode(dir) == 0o755 & ~mask)
            #expect(fileMode(tmp + "/nested/data") == 0o755 & ~mask)
            #expect(fileMode(dir + "/10.0.0.2") == 0o600 & ~mask)
            #expect(fileMode(dir + "/last_reserved_ip.0") == 0o600 & ~mask)
            #expect(fileMode(dir + "/lock") == 0o750 & ~mask)
            #expect(store.lastReservedIP(rangeSetIndex: 0) == ip("10.0.0.2"))
            #expect(store.lastReservedIP(rangeSetIndex: 1) == ip("fd00::2"))
            #expect(store.lastReservedIP(rangeSetIndex: 2) == nil)
        }
    }

    @Test func reservingATakenAddressFailsAndLeavesItAlone() throws {
        try withTempDir { tmp in
            let store = try DiskStore(network: "net1", dataDir: tmp)
            #expect(try store.reserve(ip("10.0.0.2"), id: "a", ifname: "eth0", rangeSetIndex: 0))
            #expect(try store.reserve(ip("10.0.0.3"), id: "b", ifname: "eth0", rangeSetIndex: 0))
            #expect(try !store.reserve(ip("10.0.0.2"), id: "c", ifname: "eth0", rangeSetIndex: 0))
            #expect(fileText(tmp + "/net1/10.0.0.2") == "a\r\neth0")
            // last_reserved_ip changes only on success.
            #expect(fileText(tmp + "/net1/last_reserved_ip.0") == "10.0.0.3")
        }
    }

    @Test func releaseRemovesEveryFileOfTheAttachmentAndNothingElse() throws {
        try withTempDir { tmp in
            let store = try DiskStore(network: "net1", dataDir: tmp)
            let dir = tmp + "/net1"
            _ = try store.reserve(ip("10.0.0.2"), id: "a", ifname: "eth0", rangeSetIndex: 0)
            _ = try store.reserve(ip("fd00::2"), id: "a", ifname: "eth0", rangeSetIndex: 1)
            _ = try store.reserve(ip("10.0.0.3"), id: "a", ifname: "eth1", rangeSetIndex: 0)
            _ = try store.reserve(ip("10.0.0.4"), id: "b", ifname: "eth0", rangeSetIndex: 0)
            // Outside any range: still released, as the reference walks the whole directory.
            writeFile(dir + "/192.168.9.9", "a\r\neth0\n")
            // Not an address: never touched even with matching content.
            writeFile(dir + "/notes", "a\r\neth0")

            #expect(store.getByID(id: "a", ifname: "eth0").sorted() == ["10.0.0.2", "192.168.9.9", "fd00::2"].map(ip))
            let released = try store.release(id: "a", ifname: "eth0")
            #expect(released.sorted() == ["10.0.0.2", "192.168.9.9", "fd00::2"].map(ip))
            #expect(
                listDir(dir) == ["10.0.0.3", "10.0.0.4", "last_reserved_ip.0", "last_reserved_ip.1", "lock", "notes"])
            // Releasing again is not an error.
            #expect(try store.release(id: "a", ifname: "eth0").isEmpty)
        }
    }

    @Test func legacyFilesHoldingOnlyTheContainerID() throws {
        try withTempDir { tmp in
            let store = try DiskStore(network: "net1", dataDir: tmp)
            let dir = tmp + "/net1"
            writeFile(dir + "/10.0.0.7", "old\n")
            // A legacy container ID that looks like an address must not match last_reserved_ip.
            writeFile(dir + "/10.0.0.8", "10.0.0.9")
            writeFile(dir + "/last_reserved_ip.0", "10.0.0.9")
            _ = try store.reserve(ip("10.0.0.2"), id: "old", ifname: "eth1", rangeSetIndex: 5)

            #expect(store.getByID(id: "old", ifname: "eth0") == [ip("10.0.0.7")])
            #expect(Set(store.getByID(id: "old", ifname: "eth1")) == [ip("10.0.0.2"), ip("10.0.0.7")])
            // An exact match exists for eth1: only that goes.
            #expect(try store.release(id: "old", ifname: "eth1") == [ip("10.0.0.2")])
            // None for eth0: the legacy file goes.
            #expect(try store.release(id: "old", ifname: "eth0") == [ip("10.0.0.7")])
            #expect(try store.release(id: "10.0.0.9", ifname: "eth0") == [ip("10.0.0.8")])
            #expect(listDir(dir) == ["last_reserved_ip.0", "last_reserved_ip.5", "lock"])
        }
    }

    @Test func reservationsListOwnersAndSkipBookkeepingFiles() throws {
        try withTempDir { tmp in
            let store = try DiskStore(network: "net1", dataDir: tmp)
            let dir = tmp + "/net1"
            _ = try store.reserve(ip("10.0.0.2"), id: "a", ifname: "eth0", rangeSetIndex: 0)
            writeFile(dir + "/10.0.0.3", "legacy")
            writeFile(dir + "/10.0.0.4", "")
            writeFile(dir + "/garbage", "x\r\ny")
            mkdir(dir + "/10.0.0.5", 0o755)
            let rs = try store.reservations().sorted { $0.ip < $1.ip }
            #expect(
                rs == [
                    Reservation(ip: ip("10.0.0.2"), containerID: "a", ifname: "eth0"),
                    Reservation(ip: ip("10.0.0.3"), containerID: "legacy", ifname: nil),
                    Reservation(ip: ip("10.0.0.4"), containerID: "", ifname: nil),
                ])
            let released = try store.withLock { () throws(IPAMError) in
                try store.releaseAll(notHeldBy: [Reservation.Owner(containerID: "legacy", ifname: "eth3")])
            }
            #expect(Set(released.map(\.ip)) == [ip("10.0.0.2"), ip("10.0.0.4")])
            #expect(listDir(dir) == ["10.0.0.3", "10.0.0.5", "garbage", "last_reserved_ip.0", "lock"])
        }
    }

    @Test func lockIsAnFlockOnTheLockFile() throws {
        try withTempDir { tmp in
            let store = try DiskStore(network: "net1", dataDir: tmp)
            // Another open file description, as another process (the Go binary) would have.
            let other = open(tmp + "/net1/lock", O_RDONLY)
            defer { close(other) }
            try store.lock()
            #expect(flock(other, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK)
            store.unlock()
            #expect(flock(other, LOCK_EX | LOCK_NB) == 0)
            flock(other, LOCK_UN)
        }
    }

    @Test func twoStoresInOneProcessExcludeEachOther() throws {
        try withTempDir { tmp in
            let a = try DiskStore(network: "net1", dataDir: tmp)
            let b = try DiskStore(network: "net1", dataDir: tmp)
            try a.lock()
            let fd = open(tmp + "/net1/lock", O_RDONLY)
            defer { close(fd) }
            #expect(flock(fd, LOCK_SH | LOCK_NB) == -1)
            a.unlock()
            try b.lock()
            #expect(flock(fd, LOCK_SH | LOCK_NB) == -1)
            b.unlock()
        }
    }

    @Test func badLocations() throws {
        #expect(throws: IPAMError.invalidNetworkName("a/b")) { try DiskStore(network: "a/b", dataDir: "/tmp") }
        #expect(throws: IPAMError.invalidNetworkName("..")) { try DiskStore(network: "..", dataDir: "/tmp") }
        try withTempDir { tmp in
            writeFile(tmp + "/file", "x")
            #expect(throws: IPAMError.system(call: "mkdir", path: tmp + "/file/net1", errno: ENOTDIR)) {
                try DiskStore(network: "net1", dataDir: tmp + "/file")
            }
        }
    }
}
