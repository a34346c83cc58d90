/// Every message of the agent channel, typed.
public enum Message: Sendable, Equatable {
    case joinRequest(JoinRequest)
    case joinResponse(JoinResponse)
    case hello(Hello)
    case welcome(Welcome)
    case heartbeat(Heartbeat)
    case heartbeatAck(HeartbeatAck)
    case renewCertificate(RenewCertificate)
    case certificateRenewed(CertificateRenewed)
    case error(ErrorMessage)
    case assignTask(AssignTask)
    case cancelTask(CancelTask)
    case taskAccepted(TaskAccepted)
    case taskProgress(TaskProgress)
    case taskResult(TaskResult)
    case taskResultAck(TaskResultAck)
    case objectRequest(ObjectRequest)
    case objectChunk(ObjectChunk)

    public var type: MessageType {
        switch self {
        case .joinRequest: .joinRequest
        case .joinResponse: .joinResponse
        case .hello: .hello
        case .welcome: .welcome
        case .heartbeat: .heartbeat
        case .heartbeatAck: .heartbeatAck
        case .renewCertificate: .renewCertificate
        case .certificateRenewed: .certificateRenewed
        case .error: .error
        case .assignTask: .assignTask
        case .cancelTask: .cancelTask
        case .taskAccepted: .taskAccepted
        case .taskProgress: .taskProgress
        case .taskResult: .taskResult
        case .taskResultAck: .taskResultAck
        case .objectRequest: .objectRequest
        case .objectChunk: .objectChunk
        }
    }

    /// Decodes the envelope's body according to its type.
    ///
    /// - Throws: `MusterError` `.protocolError` for an unknown type (check ``MessageType/isKnown`` first to
    ///   answer it without closing) or a body that does not match the type.
    public init(_ envelope: Envelope) throws {
        switch envelope.type {
        case .joinRequest: self = .joinRequest(try envelope.decodeBody())
        case .joinResponse: self = .joinResponse(try envelope.decodeBody())
        case .hello: self = .hello(try envelope.decodeBody())
        case .welcome: self = .welcome(try envelope.decodeBody())
        case .heartbeat: self = .heartbeat(try envelope.decodeBody())
        case .heartbeatAck: self = .heartbeatAck(try envelope.decodeBody())
        case .renewCertificate: self = .renewCertificate(try envelope.decodeBody())
        case .certificateRenewed: self = .certificateRenewed(try envelope.decodeBody())
        case .error: self = .error(try envelope.decodeBody())
        case .assignTask: self = .assignTask(try envelope.decodeBody())
        case .cancelTask: self = .cancelTask(try envelope.decodeBody())
        case .taskAccepted: self = .taskAccepted(try envelope.decodeBody())
        case .taskProgress: self = .taskProgress(try envelope.decodeBody())
        case .taskResult: self = .taskResult(try envelope.decodeBody())
        case .taskResultAck: self = .taskResultAck(try envelope.decodeBody())
        case .objectRequest: self = .objectRequest(try envelope.decodeBody())
        case .objectChunk:
            guard let payload = envelope.payload else {
                throw MusterError(.protocolError, "malformed objectChunk frame: no binary payload")
            }
            self = .objectChunk(ObjectChunk(header: try envelope.decodeBody(), data: payload))
        default:
            throw MusterError(.protocolError, "unknown message type '\(envelope.type)'")
        }
    }

    /// Wraps the message in an envelope with the given id.
    public func envelope(id: String = Envelope.makeID()) throws -> Envelope {
        switch self {
        case .joinRequest(let body): try Envelope(type: type, id: id, body: body)
        case .joinResponse(let body): try Envelope(type: type, id: id, body: body)
        case .hello(let body): try Envelope(type: type, id: id, body: body)
        case .welcome(let body): try Envelope(type: type, id: id, body: body)
        case .heartbeat(let body): try Envelope(type: type, id: id, body: body)
        case .heartbeatAck(let body): try Envelope(type: type, id: id, body: body)
        case .renewCertificate(let body): try Envelope(type: type, id: id, body: body)
        case .certificateRenewed(let body): try Envelope(type: type, id: id, body: body)
        case .error(let body): try Envelope(type: type, id: id, body: body)
        case .assignTask(let body): try Envelope(type: type, id: id, body: body)
        case .cancelTask(let body): try Envelope(type: type, id: id, body: body)
        case .taskAccepted(let body): try Envelope(type: type, id: id, body: body)
        case .taskProgress(let body): try Envelope(type: type, id: id, body: body)
        case .taskResult(let body): try Envelope(type: type, id: id, body: body)
        case .taskResultAck(let body): try Envelope(type: type, id: id, body: body)
        case .objectRequest(let body): try Envelope(type: type, id: id, body: body)
        case .objectChunk(let chunk): try Envelope(type: type, id: id, body: chunk.header, payload: chunk.data)
        }
    }
}
