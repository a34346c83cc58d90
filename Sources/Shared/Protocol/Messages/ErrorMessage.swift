/// Either direction: a failure, answering the frame with the same envelope id (or a fresh id when the failure
/// is not about one frame, e.g. an oversize frame).
public struct ErrorMessage: Codable, Sendable, Equatable {
    /// ``MusterError/Code/wireName``, e.g. `TOKEN_EXPIRED`.
    public var code: String
    public var message: String
    public var hint: String?

    public init(code: MusterError.Code, message: String, hint: String? = nil) {
        self.code = code.wireName
        self.message = message
        self.hint = hint
    }

    public init(_ error: MusterError) {
        self.init(code: error.code, message: error.message, hint: error.hint)
    }

    /// The error as a `MusterError` for the receiving side.
    public var musterError: MusterError {
        MusterError(MusterError.Code(wireName: code), message, hint: hint)
    }
}
