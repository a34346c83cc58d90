import Crypto
import Foundation
import Logging
import NIOCore
import Shared
import Synchronization
import X509

/// One connection on port 7400: decodes envelopes, drives a ``ConnectionStateMachine`` and performs its
/// actions against the ``NodeDirectory`` and the ``CertificateAuthority``.
///
/// Malformed, oversize or truncated frames and protocol violations get an error frame and the connection is
/// closed; an unknown message type gets an error frame and the connection stays up. Nothing a peer sends can
/// throw out of ``run()``.
struct AgentConnection {
    let listener: AgentListener
    let channel: NIOAsyncChannel<ByteBuffer, Envelope>
    let peer: PeerIdentityBox
    let id: UInt64
    let logger: Logger

    private var directory: any NodeDirectory { listener.directory }

    init(
        listener: AgentListener, channel: NIOAsyncChannel<ByteBuffer, Envelope>, peer: PeerIdentityBox, id: UInt64,
        logger: Logger
    ) {
        self.listener = listener
        self.channel = channel
        self.peer = peer
        self.id = id
        self.logger = logger
    }

    func run() async {
        // A connection that completes no first frame in time is closed, so idle sockets cannot pile up.
        let sawFirstFrame = Flag()
        let raw = channel.channel
        let timeout = listener.configuration.firstFrameTimeout
        let timer = raw.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.wireMilliseconds) * 1_000_000)) {
            if !sawFirstFrame.isSet { raw.close(promise: nil) }
        }
        var sessionNode: UUID?
        do {
            try await channel.executeThenClose { inbound, outbound in
                var machine: ConnectionStateMachine?
                do {
                    for try await frame in inbound {
                        sawFirstFrame.set()
                        if machine == nil {
                            // The verification callback ran before the handshake completed, so the identity is set.
                            guard let identity = peer.value else {
                                try await reject(
                                    outbound, .certificateRejected, "no verified client certificate", replyTo: nil)
                                return
                            }
                            machine = ConnectionStateMachine(identity: identity)
                        }
                        let keepOpen = try await handle(
                            frame: frame, machine: &machine, outbound: outbound, sessionNode: &sessionNode)
                        if !keepOpen { return }
                    }
                } catch let error as MusterError {
                    // Oversize or truncated frames surface here from the FrameDecoder.
                    logger.notice("closing connection: \(error.message)", metadata: ["code": "\(error.code)"])
                    try? await outbound.write(try Message.error(ErrorMessage(error)).envelope())
                }
            }
        } catch {
            logger.debug("connection ended with an error", metadata: ["error": "\(error)"])
        }
        timer.cancel()
        if let sessionNode {
            await listener.registry.close(nodeID: sessionNode, connectionID: id)
            await listener.tasks?.sessionClosed(nodeID: sessionNode, connectionID: id)
            logger.info("node session closed", metadata: ["node": "\(sessionNode)"])
        }
    }

    /// Handles one frame. Returns whether the connection stays open.
    private func handle(
        frame: ByteBuffer, machine: inout ConnectionStateMachine?, outbound: NIOAsyncChannelOutboundWriter<Envelope>,
        sessionNode: inout UUID?
    ) async throws -> Bool {
        let envelope: Envelope
        do {
            envelope = try Envelope(frame: frame)
        } catch let error as MusterError {
            try await reject(outbound, error.code, error.message, replyTo: nil)
            return false
        }
        guard envelope.version == ProtocolVersion.envelopeVersion else {
            try await reject(
                outbound, .protocolVersion,
                "unsupported envelope version v\(envelope.version): the agent sent v\(envelope.version), the "
                    + "coordinator speaks v\(ProtocolVersion.envelopeVersion)",
                replyTo: envelope.id)
            return false
        }
        guard envelope.type.isKnown else {
            try await reject(outbound, .protocolError, "unknown message type '\(envelope.type)'", replyTo: envelope.id)
            return true
        }
        let message: Message
        do {
            message = try Message(envelope)
        } catch let error as MusterError {
            try await reject(outbound, error.code, error.message, replyTo: envelope.id)
            return false
        }
        guard var current = machine else { return false }
        let action = current.received(message)
        defer { machine = current }

        switch action {
        case .reject(let code, let text, let close):
            try await reject(outbound, code, text, replyTo: envelope.id)
            return !close

        case .logPeerError(let body):
            logger.notice("agent reported an error", metadata: ["code": "\(body.code)", "message": "\(body.message)"])
            return true

        case .join(let request):
            try await join(request, replyTo: envelope.id, outbound: outbound)
            return false

        case .openSession(let nodeID, let hello, let version):
            let admission: NodeAdmission
            do {
                admission = try await directory.admission(of: nodeID)
            } catch {
                current.sessionRefused()
                try await replyDirectoryFailure(error, outbound: outbound, replyTo: envelope.id)
                return false
            }
            switch admission {
            case .forgotten:
                current.sessionRefused()
                try await reject(
                    outbound, .nodeForgotten,
                    "node \(nodeID) was removed from the cluster (muster nodes forget); it cannot reconnect",
                    hint: "join this host again with a new token: muster-agent join --coordinator … --token …",
                    replyTo: envelope.id)
                return false
            case .unknown:
                current.sessionRefused()
                try await reject(
                    outbound, .certificateRejected, "node \(nodeID) is not known to this cluster",
                    hint: "join this host again with a new token", replyTo: envelope.id)
                return false
            case .admitted:
                break
            }
            do {
                try await directory.sessionOpened(
                    nodeID: nodeID, at: Date(), address: channel.channel.remoteAddress?.ipAddress)
            } catch let error as MusterError where error.code == .nodeForgotten || error.code == .notFound {
                current.sessionRefused()
                try await reject(outbound, error.code, error.message, hint: error.hint, replyTo: envelope.id)
                return false
            } catch {
                // The node stays connected; the store catches up with the next heartbeat flush.
                logger.warning(
                    "could not record the session as opened", metadata: ["node": "\(nodeID)", "error": "\(error)"])
            }
            await listener.registry.open(nodeID: nodeID, connectionID: id, channel: channel.channel)
            sessionNode = nodeID
            let interval = await listener.currentHeartbeatInterval()
            logger.info(
                "node session opened",
                metadata: ["node": "\(nodeID)", "agent": "\(hello.agentVersion)", "protocol": "\(version)"])
            try await outbound.write(
                try Message.welcome(
                    Welcome(
                        nodeID: nodeID, protocolVersion: version, heartbeatInterval: interval, serverTime: Date(),
                        modulePublicKey: ModulePublicKey.encode(listener.authority.moduleSigningKey.publicKey))
                ).envelope(id: envelope.id))
            // Only after `welcome`: the agent takes tasks once its session is established.
            await listener.tasks?.sessionOpened(nodeID: nodeID, connectionID: id, hello: hello, outbound: outbound)
            return true

        case .task(let nodeID, let message):
            guard let tasks = listener.tasks else {
                try await reject(outbound, .protocolError, "this coordinator does not run tasks", replyTo: envelope.id)
                return true
            }
            if let reply = await tasks.received(message, nodeID: nodeID, connectionID: id) {
                try await outbound.write(try reply.envelope(id: envelope.id))
            }
            return true

        case .serveObject(let nodeID, let request):
            try await serveObject(request, nodeID: nodeID, replyTo: envelope.id, outbound: outbound)
            return true

        case .heartbeat(let nodeID, let report):
            directory.enqueueHeartbeat(nodeID: nodeID, report: report, receivedAt: Date())
            let interval = await listener.currentHeartbeatInterval()
            try await outbound.write(
                try Message.heartbeatAck(HeartbeatAck(heartbeatInterval: interval)).envelope(id: envelope.id))
            return true

        case .renewCertificate(let nodeID, let csrPEM):
            let issued: (certificatePEM: String, serial: String, notAfter: Date)
            do {
                issued = try listener.authority.signNodeCSR(
                    csrPEM, nodeID: nodeID, validity: listener.configuration.nodeCertificateValidity)
            } catch let error as MusterError {
                try await reject(outbound, error.code, error.message, replyTo: envelope.id)
                return true
            }
            do {
                try await directory.recordCertificate(
                    nodeID: nodeID, serial: issued.serial, notAfter: issued.notAfter, pem: issued.certificatePEM)
            } catch {
                try await replyDirectoryFailure(error, outbound: outbound, replyTo: envelope.id)
                return true
            }
            logger.info("renewed node certificate", metadata: ["node": "\(nodeID)", "serial": "\(issued.serial)"])
            try await outbound.write(
                try Message.certificateRenewed(
                    CertificateRenewed(certificatePEM: issued.certificatePEM, notAfter: issued.notAfter)
                ).envelope(id: envelope.id))
            return true
        }
    }

    private func join(
        _ request: JoinRequest, replyTo: String, outbound: NIOAsyncChannelOutboundWriter<Envelope>
    ) async throws {
        // Check the CSR before redeeming, so a broken request does not consume a token use.
        do {
            let csr = try PEM.certificateSigningRequest(from: request.csrPEM)
            guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
                throw MusterError(.invalidInput, "the certificate signing request's signature does not verify")
            }
        } catch let error as MusterError {
            try await reject(outbound, error.code, error.message, replyTo: replyTo)
            return
        }
        let node: NodeRecord
        do {
            node = try await directory.redeemJoinToken(
                tokenID: request.tokenID, secret: request.secret, facts: request.facts, now: Date())
        } catch {
            logger.notice(
                "join refused",
                metadata: [
                    "token": "\(request.tokenID)", "host": "\(request.facts.hostname)",
                    "error": "\(error)",
                ])
            try await replyDirectoryFailure(error, outbound: outbound, replyTo: replyTo)
            return
        }
        do {
            let issued = try listener.authority.signNodeCSR(
                request.csrPEM, nodeID: node.id, validity: listener.configuration.nodeCertificateValidity)
            try await directory.recordCertificate(
                nodeID: node.id, serial: issued.serial, notAfter: issued.notAfter, pem: issued.certificatePEM)
            let interval = await listener.currentHeartbeatInterval()
            try await outbound.write(
                try Message.joinResponse(
                    JoinResponse(
                        nodeID: node.id, certificatePEM: issued.certificatePEM,
                        caCertificatePEM: listener.authority.caCertificatePEM, heartbeatInterval: interval,
                        modulePublicKey: ModulePublicKey.encode(listener.authority.moduleSigningKey.publicKey))
                ).envelope(id: replyTo))
            logger.info(
                "node joined",
                metadata: ["node": "\(node.id)", "host": "\(request.facts.hostname)", "token": "\(request.tokenID)"])
        } catch {
            try await replyDirectoryFailure(error, outbound: outbound, replyTo: replyTo)
        }
    }

    /// Reads the requested range from the module repository and answers with one `objectChunk`. The agent
    /// bounds how many requests it has outstanding; the write below waits while the socket is not writable, so
    /// a slow agent slows the reads down instead of filling memory.
    private func serveObject(
        _ request: ObjectRequest, nodeID: UUID, replyTo: String, outbound: NIOAsyncChannelOutboundWriter<Envelope>
    ) async throws {
        guard let modules = listener.modules else {
            try await reject(outbound, .notFound, "this coordinator does not serve modules", replyTo: replyTo)
            return
        }
        guard (1...ObjectRequest.maximumLength).contains(request.length) else {
            try await reject(
                outbound, .invalidInput,
                "objectRequest length \(request.length) is outside 1...\(ObjectRequest.maximumLength)", replyTo: replyTo)
            return
        }
        let chunk: ObjectChunk
        do {
            let (data, total) =
                request.kind.isDelta
                ? try await modules.readDelta(
                    request.kind, digest: request.digest, base: request.base, offset: request.offset,
                    length: request.length, allocator: channel.channel.allocator)
                : try modules.read(
                    request.kind, digest: request.digest, offset: request.offset, length: request.length,
                    allocator: channel.channel.allocator)
            chunk = ObjectChunk(
                header: .init(kind: request.kind, digest: request.digest, offset: request.offset, totalSize: total),
                data: data)
        } catch let error as MusterError {
            logger.notice(
                "object request refused",
                metadata: ["node": "\(nodeID)", "digest": "\(request.digest)", "error": "\(error.message)"])
            try await reject(outbound, error.code, error.message, hint: error.hint, replyTo: replyTo)
            return
        }
        try await outbound.write(try Message.objectChunk(chunk).envelope(id: replyTo))
    }

    private func replyDirectoryFailure(
        _ error: any Error, outbound: NIOAsyncChannelOutboundWriter<Envelope>, replyTo: String
    ) async throws {
        if let error = error as? MusterError {
            try await reject(outbound, error.code, error.message, hint: error.hint, replyTo: replyTo)
        } else {
            logger.error("node directory failed", metadata: ["error": "\(error)"])
            try await reject(
                outbound, .databaseUnavailable, "the coordinator cannot reach its database right now",
                hint: "the agent retries; check the coordinator's logs", replyTo: replyTo)
        }
    }

    private func reject(
        _ outbound: NIOAsyncChannelOutboundWriter<Envelope>, _ code: MusterError.Code, _ text: String,
        hint: String? = nil, replyTo: String?
    ) async throws {
        logger.notice("sending error frame", metadata: ["code": "\(code)", "message": "\(text)"])
        try await outbound.write(
            try Message.error(ErrorMessage(code: code, message: text, hint: hint)).envelope(
                id: replyTo ?? Envelope.makeID()))
    }
}

/// A one-way flag shared between the connection task and an event-loop timer.
private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}
