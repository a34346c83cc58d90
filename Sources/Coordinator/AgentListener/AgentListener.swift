import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Shared
import SwiftASN1
import Synchronization
import X509

/// The agent channel on port 7400 (DESIGN §3): mutual TLS 1.3, framed JSON messages, joins and node sessions.
///
/// Every connection must present a client certificate during the handshake. A node certificate of the
/// cluster CA opens a node session (`hello` → `welcome`, heartbeats, certificate renewal); a valid self-signed
/// bootstrap certificate (``MusterPKI/bootstrapOrganization``) may send a single `joinRequest`. Certificates
/// of any other CA are refused during the handshake. One child task per connection in a discarding task
/// group; a connection's failure is logged and never reaches the listener.
public final class AgentListener: Service {
    public struct Configuration: Sendable {
        /// Address to listen on.
        public var host: String = "0.0.0.0"
        /// Port; 0 picks a free one (tests), see ``AgentListener/boundPort``.
        public var port: Int = 7400
        /// Largest frame accepted; larger ones get an error frame and the connection is closed.
        public var maxFrameBytes: Int = FrameDecoder.defaultMaximumFrameBytes
        /// Heartbeats per second this coordinator wants to absorb across all sessions.
        public var heartbeatBudgetPerSecond: Double = 50
        /// The shortest heartbeat interval ever assigned (Nomad: 10 s); tests use e.g. 200 ms.
        public var minimumHeartbeatInterval: Duration = .seconds(10)
        /// Lifetime of node certificates issued at join and renewal.
        public var nodeCertificateValidity: Duration = CertificateAuthority.defaultNodeCertificateValidity
        /// How long a new connection may take to send its first frame before it is closed.
        public var firstFrameTimeout: Duration = .seconds(30)

        public init(
            host: String = "0.0.0.0", port: Int = 7400, maxFrameBytes: Int = FrameDecoder.defaultMaximumFrameBytes,
            heartbeatBudgetPerSecond: Double = 50, minimumHeartbeatInterval: Duration = .seconds(10),
            nodeCertificateValidity: Duration = CertificateAuthority.defaultNodeCertificateValidity,
            firstFrameTimeout: Duration = .seconds(30)
        ) {
            self.host = host
            self.port = port
            self.maxFrameBytes = maxFrameBytes
            self.heartbeatBudgetPerSecond = heartbeatBudgetPerSecond
            self.minimumHeartbeatInterval = minimumHeartbeatInterval
            self.nodeCertificateValidity = nodeCertificateValidity
            self.firstFrameTimeout = firstFrameTimeout
        }

        var budget: HeartbeatBudget {
            HeartbeatBudget(budgetPerSecond: heartbeatBudgetPerSecond, minimumInterval: minimumHeartbeatInterval)
        }
    }

    public let configuration: Configuration
    let authority: CertificateAuthority
    let directory: any NodeDirectory
    /// Delivers tasks over node sessions and records their messages (`nil`: the listener refuses task messages).
    let tasks: (any TaskSessionHandler)?
    /// Published module files served to agents in `objectChunk`s (`nil`: object requests get `NOT_FOUND`).
    let modules: ModuleRepository?
    let logger: Logger
    let registry = SessionRegistry()

    private struct BindState {
        var port: Int?
        var failed = false
        var waiters: [CheckedContinuation<Int?, Never>] = []
    }

    private let bindState = Mutex(BindState())
    private let connectionCounter = Atomic<UInt64>(0)

    public init(
        configuration: Configuration, authority: CertificateAuthority, directory: any NodeDirectory,
        tasks: (any TaskSessionHandler)? = nil, modules: ModuleRepository? = nil, logger: Logger
    ) {
        self.modules = modules
        self.configuration = configuration
        self.authority = authority
        self.directory = directory
        self.tasks = tasks
        self.logger = logger
    }

    /// The port actually bound (useful with port 0), or `nil` before binding.
    public var boundPort: Int? {
        get async { bindState.withLock { $0.port } }
    }

    /// Waits until the listener is bound and returns the port, or `nil` if binding failed.
    public func waitUntilBound() async -> Int? {
        await withCheckedContinuation { continuation in
            let immediate: Int?? = bindState.withLock { state in
                if let port = state.port { return .some(port) }
                if state.failed { return .some(nil) }
                state.waiters.append(continuation)
                return .none
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
    }

    /// Number of established node sessions.
    public func sessionCount() async -> Int {
        await registry.count
    }

    /// The heartbeat interval currently assigned to nodes.
    public func currentHeartbeatInterval() async -> Duration {
        configuration.budget.interval(sessions: await registry.count)
    }

    /// Closes the session of a node, e.g. after `muster nodes forget`. Returns whether it had one.
    @discardableResult
    public func disconnect(nodeID: UUID) async -> Bool {
        await registry.disconnect(nodeID: nodeID)
    }

    /// Whether a node currently holds a session with this coordinator.
    public func isConnected(nodeID: UUID) async -> Bool {
        await registry.isConnected(nodeID)
    }

    // MARK: - Service

    public func run() async throws {
        let server: NIOAsyncChannel<AcceptedConnection, Never>
        do {
            let sslContext = try NIOSSLContext(configuration: try authority.makeAgentListenerTLSConfiguration())
            server = try await bind(sslContext: sslContext)
        } catch {
            failBinding()
            throw MusterError(
                .io, "agent listener cannot listen on \(configuration.host):\(configuration.port)",
                hint: "is another coordinator running on this port?", cause: UnderlyingError(error))
        }
        let port = server.channel.localAddress?.port ?? configuration.port
        let waiters = bindState.withLock { state in
            state.port = port
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
        logger.info("agent listener ready", metadata: ["host": "\(configuration.host)", "port": "\(port)"])

        // Graceful shutdown (or cancellation) closes the listening socket, then ends every connection; each
        // connection's executeThenClose closes its socket. See serveConnections for why not a plain loop.
        try await cancelWhenGracefulShutdown {
            try await serveConnections(of: server) { accepted in
                await self.serve(accepted)
            }
        }
        logger.info("agent listener stopped")
    }

    // MARK: - Connections

    /// One accepted TCP connection and what its TLS handshake revealed.
    struct AcceptedConnection: Sendable {
        var channel: NIOAsyncChannel<ByteBuffer, Envelope>
        var peer: PeerIdentityBox
        var id: UInt64
    }

    private func bind(sslContext: NIOSSLContext) async throws -> NIOAsyncChannel<AcceptedConnection, Never> {
        let maxFrameBytes = configuration.maxFrameBytes
        let authority = self.authority
        let logger = self.logger
        return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: configuration.host, port: configuration.port) { channel in
                let id = self.connectionCounter.wrappingAdd(1, ordering: .relaxed).newValue
                return channel.eventLoop.makeCompletedFuture {
                    let peer = PeerIdentityBox()
                    let remote = "\(channel.remoteAddress.map { "\($0)" } ?? "?")"
                    let tls = NIOSSLServerHandler(
                        context: sslContext,
                        customVerificationCallback: Self.verificationCallback(
                            authority: authority, peer: peer, logger: logger, remote: remote))
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maximumFrameBytes: maxFrameBytes)))
                    try channel.pipeline.syncOperations.addHandler(FrameWriter())
                    let async = try NIOAsyncChannel<ByteBuffer, Envelope>(wrappingChannelSynchronously: channel)
                    return AcceptedConnection(channel: async, peer: peer, id: id)
                }
            }
    }

    /// Accepts node certificates of the cluster CA and bootstrap certificates; refuses the rest in the handshake.
    private static func verificationCallback(
        authority: CertificateAuthority, peer: PeerIdentityBox, logger: Logger, remote: String
    ) -> NIOSSLCustomVerificationCallback {
        { certificates, promise in
            let chain: [Certificate]
            do {
                chain = try certificates.map { try Certificate(derEncoded: try $0.toDERBytes()) }
            } catch {
                logger.notice("refused TLS client: certificate does not parse", metadata: ["remote": "\(remote)"])
                promise.succeed(.failed)
                return
            }
            promise.completeWithTask {
                do {
                    let identity = try await authority.classifyClient(chain: chain)
                    peer.set(identity)
                    return .certificateVerified
                } catch {
                    logger.notice(
                        "refused TLS client certificate",
                        metadata: ["remote": "\(remote)", "reason": "\(error)"])
                    return .failed
                }
            }
        }
    }

    private func serve(_ accepted: AcceptedConnection) async {
        var connectionLogger = logger
        connectionLogger[metadataKey: "connection"] = "\(accepted.id)"
        if let remote = accepted.channel.channel.remoteAddress {
            connectionLogger[metadataKey: "remote"] = "\(remote)"
        }
        let connection = AgentConnection(
            listener: self, channel: accepted.channel, peer: accepted.peer, id: accepted.id, logger: connectionLogger)
        await connection.run()
    }

    private func failBinding() {
        let waiters = bindState.withLock { state in
            state.failed = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }
}

/// Carries the identity established by the TLS verification callback (on the event loop) to the connection
/// task. Written once before the handshake completes, read after the first frame arrived.
final class PeerIdentityBox: Sendable {
    private let identity = Mutex<CertificateAuthority.ClientIdentity?>(nil)

    func set(_ value: CertificateAuthority.ClientIdentity) {
        identity.withLock { $0 = value }
    }

    var value: CertificateAuthority.ClientIdentity? {
        identity.withLock { $0 }
    }
}
