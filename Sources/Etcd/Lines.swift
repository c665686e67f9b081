// Stream framing: the gateway writes one JSON object per line on streaming methods, and the HTTP
// body arrives in chunks whose boundaries mean nothing.

import NIOCore

/// Cuts a byte stream into lines, keeping an incomplete last line for the next chunk.
struct LineSplitter {
    private var pending: [UInt8] = []

    /// The complete, non-empty lines that `chunk` finishes, without their newline.
    mutating func append(_ chunk: some Collection<UInt8>) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        var rest = chunk[...]
        while let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
            pending.append(contentsOf: rest[..<newline])
            if pending.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\r") }) {
                lines.append(pending)
            }
            pending.removeAll(keepingCapacity: true)
            rest = rest[rest.index(after: newline)...]
        }
        pending.append(contentsOf: rest)
        return lines
    }

    /// What is left when the stream ends without a final newline.
    mutating func finish() -> [UInt8]? {
        defer { pending = [] }
        return pending.isEmpty ? nil : pending
    }
}
