// CNI specification versions and which verbs each allows.

public enum SpecVersion: String, CaseIterable, Comparable, Sendable {
    case v0_1_0 = "0.1.0"
    case v0_2_0 = "0.2.0"
    case v0_3_0 = "0.3.0"
    case v0_3_1 = "0.3.1"
    case v0_4_0 = "0.4.0"
    case v1_0_0 = "1.0.0"
    case v1_1_0 = "1.1.0"

    /// The newest version this implementation speaks; VERSION prints it as its own `cniVersion`.
    public static let current = SpecVersion.v1_1_0

    public static func < (l: SpecVersion, r: SpecVersion) -> Bool {
        allCases.firstIndex(of: l)! < allCases.firstIndex(of: r)!
    }

    /// The result layout this version uses.
    public enum ResultLayout: Sendable { case legacy, v04, v1 }
    public var layout: ResultLayout {
        switch self {
        case .v0_1_0, .v0_2_0: .legacy
        case .v0_3_0, .v0_3_1, .v0_4_0: .v04
        case .v1_0_0, .v1_1_0: .v1
        }
    }

    /// The first version that allows `command` (ADD and DEL exist in every version).
    static func minimum(for command: Command) -> SpecVersion {
        switch command {
        case .add, .del, .version: .v0_1_0
        case .check: .v0_4_0
        case .gc, .status: .v1_1_0
        }
    }
}

public enum Command: String, Sendable {
    case add = "ADD", del = "DEL", check = "CHECK", version = "VERSION", gc = "GC", status = "STATUS"
}
