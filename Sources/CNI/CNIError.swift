// CNI errors: one JSON object on stdout with the spec's code, a non-zero exit status.

/// An error a plugin reports to the runtime. `code` is one of the spec's codes (SPEC.md §5).
public struct CNIError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: Int, Sendable {
        case unknown = 0
        case incompatibleVersion = 1
        case unsupportedField = 2
        case unknownContainer = 3
        case invalidEnvironment = 4
        case ioFailure = 5
        case decodingFailure = 6
        case invalidNetworkConfig = 7
        case invalidNetNS = 8
        case tryAgainLater = 11
        case notAvailable = 50
        case limitedConnectivity = 51
        case `internal` = 999
    }

    /// The numeric code; plugin-specific codes (>= 100) and codes passed through from a delegate
    /// are kept as they are.
    public var code: Int
    public var msg: String
    public var details: String?

    public init(_ code: Code, _ msg: String, details: String? = nil) {
        self.init(code: code.rawValue, msg: msg, details: details)
    }

    public init(code: Int, msg: String, details: String? = nil) {
        self.code = code
        self.msg = msg
        self.details = details
    }

    public var description: String { details.map { "\(msg): \($0)" } ?? msg }

    /// Wraps any error as CNI code 999 with `context` in front, keeping a CNIError's own code.
    public static func wrap(_ error: any Error, _ context: String) -> CNIError {
        if var e = error as? CNIError {
            e.msg = "\(context): \(e.msg)"
            return e
        }
        return CNIError(.internal, "\(context): \(error)")
    }

    /// The spec's error object; `cniVersion` is included when known.
    public func json(cniVersion: String?) -> JSON {
        var o: [String: JSON] = ["code": .int(Int64(code)), "msg": .string(msg)]
        if let details { o["details"] = .string(details) }
        if let cniVersion { o["cniVersion"] = .string(cniVersion) }
        return .object(o)
    }

    /// Reads an error object printed by another plugin (a delegate).
    public init?(json: JSON) {
        // Keys matched as Go's encoding/json matches them (types.Error), so "Code" counts too.
        guard let o = json.objectValue, let code = try? o.value("code", as: Int.self) else { return nil }
        self.init(
            code: code, msg: (try? o.value("msg", as: String.self)) ?? "",
            details: try? o.value("details", as: String.self))
    }
}
