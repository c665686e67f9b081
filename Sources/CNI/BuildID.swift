// The GNU build-id of an ELF file (NT_GNU_BUILD_ID in a PT_NOTE segment).
//
// scripts/build.sh stamps every plugin of one build with the same build-id, a hash of the
// sources. Two binaries with the same stamp run the same code, so a delegate that carries our
// own stamp can run in-process instead of being executed, with the same result (see Delegate).
// Builds without the stamp (plain `swift build`) carry no build-id and always execute.

#if canImport(Glibc)
    import Glibc
#endif

enum BuildID {
    /// This executable's build-id, read once.
    static let current: [UInt8]? = read(path: "/proc/self/exe")

    /// Reads the build-id from the ELF header, program headers and notes: a few small preads,
    /// never the whole file. Nil for anything that is not a 64-bit little-endian ELF with one.
    static func read(path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        func bytes(_ offset: Int, _ count: Int) -> [UInt8]? {
            // The header fields are the file's: a size with the top bit set reads as negative.
            guard offset >= 0, count >= 0 else { return nil }
            var b = [UInt8](repeating: 0, count: count)
            let n = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
            return n == count ? b : nil
        }
        func u(_ b: [UInt8], _ at: Int, _ size: Int) -> Int {
            (0..<size).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) }
        }
        // e_ident: \x7fELF, ELFCLASS64, ELFDATA2LSB
        guard let h = bytes(0, 64), h[0..<4] == [0x7f, 0x45, 0x4c, 0x46], h[4] == 2, h[5] == 1 else { return nil }
        let phoff = u(h, 0x20, 8), phentsize = u(h, 0x36, 2), phnum = u(h, 0x38, 2)
        guard phentsize >= 56, phnum < 64, let ph = bytes(phoff, phentsize * phnum) else { return nil }
        for i in 0..<phnum where u(ph, i * phentsize, 4) == 4 {  // PT_NOTE
            let offset = u(ph, i * phentsize + 8, 8), size = min(u(ph, i * phentsize + 32, 8), 4096)
            guard let notes = bytes(offset, size) else { continue }
            var at = 0
            while at + 12 <= notes.count {
                let namesz = u(notes, at, 4), descsz = u(notes, at + 4, 4), type = u(notes, at + 8, 4)
                let name = at + 12, desc = name + (namesz + 3) & ~3
                guard desc + descsz <= notes.count else { break }
                if type == 3, namesz == 4, notes[name..<name + 3] == [0x47, 0x4e, 0x55] {  // NT_GNU_BUILD_ID, "GNU"
                    return Array(notes[desc..<desc + descsz])
                }
                at = desc + (descsz + 3) & ~3
            }
        }
        return nil
    }
}
