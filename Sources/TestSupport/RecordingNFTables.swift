// An NFTablesKernel for tests: records every batch and listing, answers listings from a closure
// and fails batches where told to. Lets tests read the netlink batches and inject the kernel's
// refusals (the seam where nftables falls back to `nft -f`) without root.

import Netfilter
import Netlink
import Synchronization

public final class RecordingNFTables: NFTablesKernel {
    let applied = Mutex<[NFTBatch]>([])
    let listed = Mutex<[String]>([])
    let listing: @Sendable (NFTFamily, String, String?) -> [NFTListedRule]
    let failure: @Sendable (NFTBatch) -> NetfilterError?

    /// `listing` answers `rules(family, table, chain)` (empty tables by default); `failure` is
    /// thrown for a batch when it returns non-nil (nothing is recorded as applied then).
    public init(
        listing: @escaping @Sendable (NFTFamily, String, String?) -> [NFTListedRule] = { _, _, _ in [] },
        failure: @escaping @Sendable (NFTBatch) -> NetfilterError? = { _ in nil }
    ) {
        self.listing = listing
        self.failure = failure
    }

    /// The batches applied, in order.
    public var batches: [NFTBatch] { applied.withLock { $0 } }
    /// The listings asked for, as "family table [chain]".
    public var listings: [String] { listed.withLock { $0 } }

    public func rules(_ family: NFTFamily, table: String, chain: String?) throws(NetfilterError) -> [NFTListedRule] {
        listed.withLock { $0.append(([family.name, table] + (chain.map { [$0] } ?? [])).joined(separator: " ")) }
        return listing(family, table, chain)
    }

    public func apply(_ batch: NFTBatch) throws(NetfilterError) {
        if let error = failure(batch) { throw error }
        applied.withLock { $0.append(batch) }
    }

    /// The kernel's refusal of a batch it cannot take (EOPNOTSUPP), as netlink reports it.
    public static let refusal = NetfilterError.netlink(
        .libnl(.notSupported, operation: "NFT_MSG_NEWRULE inet t c", message: "Operation not supported"))
}
