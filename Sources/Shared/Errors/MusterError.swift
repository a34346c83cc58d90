/// The one error type Muster shows to operators, agents and API clients.
///
/// `code` decides the exit code, the wire error code and the HTTP status in one place
/// (``MusterError/Code``). `description` is safe to print and log: it never contains a token secret or a
/// database password; put such details in `cause` (shown only by `debugDescription`).
public struct MusterError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable, CaseIterable {
            case usage
            case invalidInput
            case notFound
            case conflict
            case unauthorized
            case forbidden
            case tokenExpired
            case tokenUnknown
            case tokenUsedUp
            case tokenRevoked
            case tokenMalformed
            case caPinMismatch
            case certificateRejected
            case nodeForgotten
            case protocolError
            case protocolVersion
            case frameTooLarge
            case databaseUnavailable
            case connectionFailed
            case timeout
            case digestMismatch
            case verificationFailed
            case sourceLocked
            case sourceCorrupt
            case unitNotFound
            case unitFailed
            case cancelled
            case io
            case `internal`
        }
        fileprivate let base: Base
        private init(_ base: Base) { self.base = base }

        public static let usage = Code(.usage)
        public static let invalidInput = Code(.invalidInput)
        public static let notFound = Code(.notFound)
        public static let conflict = Code(.conflict)
        public static let unauthorized = Code(.unauthorized)
        public static let forbidden = Code(.forbidden)
        public static let tokenExpired = Code(.tokenExpired)
        public static let tokenUnknown = Code(.tokenUnknown)
        public static let tokenUsedUp = Code(.tokenUsedUp)
        public static let tokenRevoked = Code(.tokenRevoked)
        public static let tokenMalformed = Code(.tokenMalformed)
        public static let caPinMismatch = Code(.caPinMismatch)
        public static let certificateRejected = Code(.certificateRejected)
        public static let nodeForgotten = Code(.nodeForgotten)
        public static let protocolError = Code(.protocolError)
        public static let protocolVersion = Code(.protocolVersion)
        public static let frameTooLarge = Code(.frameTooLarge)
        public static let databaseUnavailable = Code(.databaseUnavailable)
        public static let connectionFailed = Code(.connectionFailed)
        public static let timeout = Code(.timeout)
        public static let digestMismatch = Code(.digestMismatch)
        public static let verificationFailed = Code(.verificationFailed)
        public static let sourceLocked = Code(.sourceLocked)
        public static let sourceCorrupt = Code(.sourceCorrupt)
        public static let unitNotFound = Code(.unitNotFound)
        /// A unit Muster started failed (systemd's Result and the unit's last log lines are in the message).
        public static let unitFailed = Code(.unitFailed)
        /// A task was cancelled by an operator.
        public static let cancelled = Code(.cancelled)
        public static let io = Code(.io)
        public static let `internal` = Code(.internal)

        /// The stable wire name, e.g. `TOKEN_EXPIRED`; used in error frames and JSON API errors.
        public var wireName: String {
            var out = ""
            for ch in base.rawValue {
                if ch.isUppercase { out.append("_") }
                out.append(contentsOf: ch.uppercased())
            }
            return out
        }

        /// Parses a wire name back into a code (unknown names become `.internal`).
        public init(wireName: String) {
            self = Base.allCases.map(Code.init).first { $0.wireName == wireName } ?? .internal
        }

        public var description: String { wireName }

        /// Process exit code for CLIs: 2 usage / connection problems, 1 everything else that failed.
        public var exitCode: Int32 {
            switch base {
            case .usage, .connectionFailed, .databaseUnavailable, .tokenMalformed: 2
            default: 1
            }
        }

        /// HTTP status for the admin API.
        public var httpStatus: Int {
            switch base {
            case .usage, .invalidInput, .tokenMalformed, .protocolError, .protocolVersion, .frameTooLarge,
                .digestMismatch, .verificationFailed:
                400
            case .unauthorized, .tokenExpired, .tokenUnknown, .tokenUsedUp, .tokenRevoked, .caPinMismatch,
                .certificateRejected:
                401
            case .forbidden, .nodeForgotten: 403
            case .notFound, .unitNotFound: 404
            case .conflict, .cancelled: 409
            case .databaseUnavailable: 503
            case .timeout: 504
            default: 500
            }
        }
    }

    public var code: Code
    /// What went wrong, for the operator. Never contains secrets.
    public var message: String
    /// What to do about it, if we know.
    public var hint: String?
    /// The underlying error, shown only in `debugDescription`.
    public var cause: (any Error & Sendable)?
    public var file: String
    public var line: Int

    public init(
        _ code: Code,
        _ message: String,
        hint: String? = nil,
        cause: (any Error & Sendable)? = nil,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.hint = hint
        self.cause = cause
        self.file = file
        self.line = line
    }

    public var description: String {
        if let hint { return "\(message)\nhint: \(hint)" }
        return message
    }

    public var debugDescription: String {
        var s = "MusterError(\(code.wireName)) at \(file):\(line): \(message)"
        if let hint { s += " [hint: \(hint)]" }
        if let cause { s += " cause: \(String(reflecting: cause))" }
        return s
    }
}
