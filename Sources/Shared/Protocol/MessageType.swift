/// The `type` field of a frame's envelope.
///
/// A struct rather than an enum so that a frame with a type this build does not know still decodes: the
/// receiver answers it with an error frame and keeps the connection (DESIGN §3).
public struct MessageType: RawRepresentable, Hashable, Codable, Sendable, CustomStringConvertible {
    public var rawValue: String

    public init(rawValue: String) { self.rawValue = rawValue }

    // MARK: - Agent → coordinator

    /// First frame of a joining agent (bootstrap certificate): token, CSR, host facts.
    public static let joinRequest = MessageType(rawValue: "joinRequest")
    /// First frame of a node session: node id, agent version, protocol versions.
    public static let hello = MessageType(rawValue: "hello")
    /// Periodic health report.
    public static let heartbeat = MessageType(rawValue: "heartbeat")
    /// A new CSR for the node's key, sent at 2/3 of the certificate's lifetime.
    public static let renewCertificate = MessageType(rawValue: "renewCertificate")
    /// A task started (or is still running after a repeated delivery).
    public static let taskAccepted = MessageType(rawValue: "taskAccepted")
    /// How far a running task got.
    public static let taskProgress = MessageType(rawValue: "taskProgress")
    /// A task finished (succeeded or failed); repeated after a reconnect until acknowledged.
    public static let taskResult = MessageType(rawValue: "taskResult")
    /// Protocol v2: a range of a module object, image or descriptor.
    public static let objectRequest = MessageType(rawValue: "objectRequest")

    // MARK: - Coordinator → agent

    /// Answer to `joinRequest`: node id and signed certificate.
    public static let joinResponse = MessageType(rawValue: "joinResponse")
    /// Answer to `hello`: negotiated version, heartbeat interval, server time.
    public static let welcome = MessageType(rawValue: "welcome")
    /// Answer to `heartbeat`; carries the current heartbeat interval, which changes with the session count.
    public static let heartbeatAck = MessageType(rawValue: "heartbeatAck")
    /// Answer to `renewCertificate`: the new certificate.
    public static let certificateRenewed = MessageType(rawValue: "certificateRenewed")
    /// Run a task.
    public static let assignTask = MessageType(rawValue: "assignTask")
    /// Stop a running task.
    public static let cancelTask = MessageType(rawValue: "cancelTask")
    /// Answer to `taskResult`: stored, stop re-reporting it.
    public static let taskResultAck = MessageType(rawValue: "taskResultAck")
    /// Protocol v2: answer to `objectRequest`, the bytes as the frame's binary payload.
    public static let objectChunk = MessageType(rawValue: "objectChunk")

    // MARK: - Both directions

    /// A failure, with a ``MusterError/Code`` wire name.
    public static let error = MessageType(rawValue: "error")

    /// Every type this build understands.
    public static let known: Set<MessageType> = [
        .joinRequest, .hello, .heartbeat, .renewCertificate, .joinResponse, .welcome, .heartbeatAck,
        .certificateRenewed, .error, .assignTask, .cancelTask, .taskAccepted, .taskProgress, .taskResult,
        .taskResultAck, .objectRequest, .objectChunk,
    ]

    public var isKnown: Bool { Self.known.contains(self) }

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        self.rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}
