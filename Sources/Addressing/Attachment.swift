// The spec's name for one interface of one container. It lives here, below both CNI (which reads
// GC's `cni.dev/valid-attachments`) and Netfilter (whose masquerade rules are keyed by it), so
// that the two share one type without either depending on the other.

/// An attachment, as the CNI spec identifies it: (CNI_CONTAINERID, CNI_IFNAME).
public struct Attachment: Hashable, Sendable {
    public var containerID: String
    public var ifname: String

    public init(containerID: String, ifname: String) {
        self.containerID = containerID
        self.ifname = ifname
    }
}
