import Foundation
import Shared

/// The protocol rules of one connection on port 7400, as a value: feed it each decoded message, do what the
/// returned action says.
///
/// A bootstrap connection (self-signed join certificate) may send exactly one `joinRequest`; a node
/// connection must start with `hello` for the node named in its certificate, then send heartbeats and
/// certificate renewals. Anything else is a protocol error that closes the connection.
struct ConnectionStateMachine: Sendable {
    enum State: Sendable, Equatable {
        /// The admin certificate: valid for TLS, but no agent messages.
        case adminOnly
        case awaitingJoin
        case awaitingHello(UUID)
        case established(UUID, ProtocolVersion)
        case closed
    }

    enum Action: Sendable, Equatable {
        /// Redeem the token, sign the CSR, answer `joinResponse`, then close.
        case join(JoinRequest)
        /// Check admission of the node, register the session, answer `welcome` with the negotiated version.
        case openSession(nodeID: UUID, hello: Hello, version: ProtocolVersion)
        /// Queue the report, answer `heartbeatAck`.
        case heartbeat(nodeID: UUID, report: HealthReport)
        /// Sign the CSR, record it, answer `certificateRenewed`.
        case renewCertificate(nodeID: UUID, csrPEM: String)
        /// A task message of the node's agent (`taskAccepted`, `taskProgress`, `taskResult`): record it.
        case task(nodeID: UUID, Message)
        /// Protocol v2: answer with an `objectChunk` (or an error frame with the request's id).
        case serveObject(nodeID: UUID, ObjectRequest)
        /// The peer reported an error; log it.
        case logPeerError(ErrorMessage)
        /// Answer with an error frame; close afterwards when `close` is set.
        case reject(code: MusterError.Code, message: String, close: Bool)
    }

    private(set) var state: State
    let supportedVersions: [ProtocolVersion]

    init(
        identity: CertificateAuthority.ClientIdentity, supportedVersions: [ProtocolVersion] = ProtocolVersion.supported
    ) {
        switch identity {
        case .bootstrap: state = .awaitingJoin
        case .admin: state = .adminOnly
        case .node(let id): state = .awaitingHello(id)
        }
        self.supportedVersions = supportedVersions
    }

    mutating func received(_ message: Message) -> Action {
        switch (state, message) {
        case (.closed, _):
            return .reject(code: .protocolError, message: "the connection is closing", close: true)

        case (.adminOnly, _):
            state = .closed
            return .reject(
                code: .forbidden, message: "the admin certificate cannot be used on the agent port", close: true)

        case (_, .error(let body)):
            return .logPeerError(body)

        case (.awaitingJoin, .joinRequest(let request)):
            state = .closed
            return .join(request)
        case (.awaitingJoin, _):
            state = .closed
            return .reject(
                code: .forbidden,
                message: "a connection with a bootstrap certificate may only send joinRequest, got \(message.type)",
                close: true)

        case (.awaitingHello(let nodeID), .hello(let hello)):
            guard hello.nodeID == nodeID else {
                state = .closed
                return .reject(
                    code: .forbidden,
                    message: "hello names node \(hello.nodeID) but the client certificate is for node \(nodeID)",
                    close: true)
            }
            guard let version = ProtocolVersion.negotiate(offered: hello.protocolVersions, supported: supportedVersions)
            else {
                state = .closed
                let offered = hello.protocolVersions.map(\.description).joined(separator: ", ")
                let ours = supportedVersions.map(\.description).joined(separator: ", ")
                return .reject(
                    code: .protocolVersion,
                    message: "unsupported protocol version: the agent speaks [\(offered)], the coordinator speaks "
                        + "[\(ours)]",
                    close: true)
            }
            state = .established(nodeID, version)
            return .openSession(nodeID: nodeID, hello: hello, version: version)
        case (.awaitingHello, _):
            state = .closed
            return .reject(code: .protocolError, message: "expected hello first, got \(message.type)", close: true)

        case (.established(let nodeID, _), .heartbeat(let heartbeat)):
            return .heartbeat(nodeID: nodeID, report: heartbeat.report)
        case (.established(let nodeID, _), .renewCertificate(let request)):
            return .renewCertificate(nodeID: nodeID, csrPEM: request.csrPEM)
        case (.established(let nodeID, _), .taskAccepted), (.established(let nodeID, _), .taskProgress),
            (.established(let nodeID, _), .taskResult):
            return .task(nodeID: nodeID, message)
        case (.established(let nodeID, let version), .objectRequest(let request)):
            guard version >= .v2 else {
                return .reject(
                    code: .protocolError, message: "objectRequest needs protocol v2; this session speaks \(version)",
                    close: false)
            }
            guard !request.kind.isDelta || version >= .v3 else {
                return .reject(
                    code: .protocolError,
                    message:
                        "objectRequest kind \(request.kind.rawValue) needs protocol v3; this session speaks \(version)",
                    close: false)
            }
            return .serveObject(nodeID: nodeID, request)
        case (.established, _):
            state = .closed
            return .reject(
                code: .protocolError, message: "\(message.type) is not valid in an established session", close: true)
        }
    }

    /// The session could not be opened (node forgotten, unknown, database error).
    mutating func sessionRefused() {
        state = .closed
    }
}
