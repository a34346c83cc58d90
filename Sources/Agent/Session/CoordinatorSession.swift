import Crypto
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Shared
import Synchronization
import X509

/// The agent's long-running session with its coordinator (DESIGN §3): connect with the node certificate,
/// `hello` → `welcome`, heartbeats at the assigned interval, certificate renewal at 2/3 of its lifetime,
/// reconnect with exponential backoff and full jitter. Stops (throws) only when reconnecting cannot help, e.g.
/// the node was forgotten.
public final class CoordinatorSession: Service {
    public struct Configuration: Sendable {
        public var stateDirectory: String
        public var backoff: Backoff
        /// The agent never beats faster than this, whatever the coordinator assigns.
        public var minimumHeartbeatInterval: Duration
        public var maxFrameBytes: Int

        public init(
            stateDirectory: String, backoff: Backoff = Backoff(),
            minimumHeartbeatInterval: Duration = .milliseconds(100),
            maxFrameBytes: Int = FrameDecoder.defaultMaximumFrameBytes
        ) {
            self.stateDirectory = stateDirectory
            self.backoff = backoff
            self.minimumHeartbeatInterval = minimumHeartbeatInterval
            self.maxFrameBytes = maxFrameBytes
        }
    }

    /// What the session is doing, for tests and logs.
    public struct Status: Sendable, Equatable {
        public var connected = false
        /// Sessions established so far (a reconnect adds one).
        public var establishedCount = 0
        public var heartbeatsSent = 0
        public var renewals = 0
        public var heartbeatInterval: Duration?
    }

    public let configuration: Configuration
    let logger: Logger
    let health: HealthCollector
    /// Runs the tasks the coordinator assigns (`nil`: assignments are answered with a failed result).
    public let tasks: TaskRunner?
    /// Module transfer over this session (`nil`: object chunks are dropped).
    public let objects: ObjectTransport?
    private let statusBox = Mutex(Status())

    /// - Parameter health: what heartbeats report; default: host health of the state directory, no units or volumes.
    public init(
        configuration: Configuration, tasks: TaskRunner? = nil, objects: ObjectTransport? = nil,
        health: HealthCollector? = nil, logger: Logger
    ) {
        self.configuration = configuration
        self.tasks = tasks
        self.objects = objects
        self.logger = logger
        self.health = health ?? HealthCollector(stateDirectory: configuration.stateDirectory)
    }

    public var status: Status { statusBox.withLock { $0 } }

    public func run() async throws {
        // Fail fast (before the service group settles) when the host has not joined.
        let identity = try NodeIdentity.load(stateDirectory: configuration.stateDirectory)
        logger.info(
            "agent starting", metadata: ["node": "\(identity.nodeID)", "coordinator": "\(identity.coordinator)"])
        do {
            try await cancelWhenGracefulShutdown {
                try await self.loop(identity: identity)
            }
        } catch is CancellationError {
            // Graceful shutdown.
        }
        statusBox.withLock { $0.connected = false }
        logger.info("agent session stopped")
    }

    /// Connect, hold the session, back off, reconnect — until stopped or cancelled.
    private func loop(identity initial: NodeIdentity) async throws {
        var identity = initial
        var machine = SessionStateMachine(
            nodeID: identity.nodeID, agentVersion: MusterVersion.current,
            certificateNotBefore: identity.certificate.notValidBefore,
            certificateNotAfter: identity.certificate.notValidAfter, backoff: configuration.backoff,
            minimumHeartbeatInterval: configuration.minimumHeartbeatInterval)
        var action = machine.start()
        while true {
            switch action {
            case .connect:
                do {
                    action = try await connectOnce(machine: &machine, identity: &identity)
                } catch is CancellationError {
                    return
                } catch {
                    if Task.isCancelled { return }
                    statusBox.withLock { $0.connected = false }
                    action = machine.connectionLost(error, unitRandom: Double.random(in: 0...1))
                    if case .reconnect(let delay) = action {
                        logger.warning(
                            "coordinator unavailable: \(Self.describe(error)); retrying in \(delay)",
                            metadata: ["attempt": "\(machine.failures)"])
                    }
                }
            case .reconnect(let delay):
                statusBox.withLock { $0.connected = false }
                try await Task.sleep(for: delay)
                action = machine.retry()
            case .stop(let reason):
                statusBox.withLock { $0.connected = false }
                logger.error("stopping: \(reason.message)")
                throw reason.error
            default:
                action = machine.retry()
            }
        }
    }

    private static func describe(_ error: any Error) -> String {
        (error as? MusterError)?.message ?? "\(error)"
    }

    private enum Event: Sendable {
        case frame(ByteBuffer)
        case tick
        case closed((any Error & Sendable)?)
    }

    /// Holds the heartbeat interval shared between the event loop of the session and the ticker task.
    private final class IntervalBox: Sendable {
        let value = Mutex<Duration?>(nil)
    }

    /// One connection, until it ends. Returns the state machine's next action (reconnect or stop).
    private func connectOnce(machine: inout SessionStateMachine, identity: inout NodeIdentity) async throws
        -> SessionStateMachine.Action
    {
        let current = identity
        return try await CoordinatorConnection.withConnection(
            to: current.coordinator, certificateChain: [current.certificate], privateKey: current.privateKey,
            trust: .certificateAuthority(current.caCertificate), maxFrameBytes: configuration.maxFrameBytes
        ) { inbound, outbound in
            let (events, continuation) = AsyncStream<Event>.makeStream()
            let interval = IntervalBox()
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        for try await frame in inbound { continuation.yield(.frame(frame)) }
                        continuation.yield(.closed(nil))
                    } catch {
                        continuation.yield(.closed(UnderlyingError(error)))
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        let wait = interval.value.withLock { $0 } ?? .milliseconds(50)
                        try await Task.sleep(for: wait)
                        if interval.value.withLock({ $0 }) != nil { continuation.yield(.tick) }
                    }
                }
                defer {
                    self.tasks?.detach()
                    self.objects?.detach()
                    group.cancelAll()
                    continuation.finish()
                }
                let finished = self.tasks?.unacknowledgedTaskIDs ?? []
                if let end = try await self.perform(
                    machine.connected(finishedTaskIDs: finished), outbound: outbound, interval: interval,
                    identity: &identity)
                {
                    return end
                }
                for await event in events {
                    let action: SessionStateMachine.Action
                    switch event {
                    case .tick:
                        action = machine.heartbeatDue(now: Date())
                    case .closed(let error):
                        throw error.map { MusterError(.connectionFailed, "connection lost: \($0)") }
                            ?? MusterError(.connectionFailed, "the coordinator closed the connection")
                    case .frame(let frame):
                        let envelope = try Envelope(frame: frame)
                        guard envelope.type.isKnown else {
                            self.logger.notice("ignoring unknown message type from the coordinator: \(envelope.type)")
                            try await outbound.write(
                                try Message.error(
                                    ErrorMessage(
                                        code: .protocolError, message: "unknown message type '\(envelope.type)'")
                                ).envelope(id: envelope.id))
                            continue
                        }
                        // Module transfer answers go to the fetcher, never through the state machine.
                        if envelope.type == .objectChunk {
                            _ = self.objects?.received(envelope)
                            continue
                        }
                        if envelope.type == .error, self.objects?.received(envelope) == true { continue }
                        let message = try Message(envelope)
                        if case .welcome(let welcome) = message {
                            self.welcomed(welcome, outbound: outbound)
                        }
                        action = machine.received(message, now: Date())
                    }
                    if let end = try await self.perform(
                        action, outbound: outbound, interval: interval, identity: &identity)
                    {
                        return end
                    }
                }
                // The event stream only ends when the task is cancelled (graceful shutdown).
                throw CancellationError()
            }
        }
    }

    /// Performs an action. Returns a non-nil action when the connection must end with it.
    private func perform(
        _ action: SessionStateMachine.Action, outbound: NIOAsyncChannelOutboundWriter<Envelope>, interval: IntervalBox,
        identity: inout NodeIdentity
    ) async throws -> SessionStateMachine.Action? {
        switch action {
        case .none, .connect:
            return nil
        case .sendHello(let hello):
            try await outbound.write(try Message.hello(hello).envelope())
            return nil
        case .startHeartbeats(let every):
            interval.value.withLock { $0 = every }
            statusBox.withLock {
                $0.connected = true
                $0.establishedCount += 1
                $0.heartbeatInterval = every
            }
            logger.info("session established", metadata: ["heartbeatInterval": "\(every)"])
            try await sendHeartbeat(outbound)
            // Task messages share the connection; a write after it closed fails and the journal keeps the result.
            await tasks?.attach { message in
                _ = try? await outbound.write(try message.envelope())
            }
            return nil
        case .runTask(let assign):
            if let tasks {
                await tasks.deliver(assign)
            } else {
                let failure = TaskFailure(code: .invalidInput, message: "this agent runs no tasks")
                try await outbound.write(
                    try Message.taskResult(
                        TaskResult(
                            taskID: assign.taskID, attempt: assign.attempt, outcome: .failed, error: failure,
                            finishedAt: Date())
                    ).envelope())
            }
            return nil
        case .cancelTask(let taskID):
            tasks?.cancel(taskID)
            return nil
        case .acknowledgeResult(let taskID):
            tasks?.acknowledge(taskID)
            return nil
        case .updateHeartbeatInterval(let every):
            interval.value.withLock { $0 = every }
            statusBox.withLock { $0.heartbeatInterval = every }
            logger.debug("heartbeat interval changed", metadata: ["heartbeatInterval": "\(every)"])
            return nil
        case .sendHeartbeat:
            try await sendHeartbeat(outbound)
            return nil
        case .sendHeartbeatAndRenew:
            try await sendHeartbeat(outbound)
            let csr = try MusterPKI.makeCSR(
                key: identity.privateKey, commonName: identity.nodeID.uuidString.lowercased())
            try await outbound.write(try Message.renewCertificate(RenewCertificate(csrPEM: csr)).envelope())
            logger.info(
                "requested certificate renewal", metadata: ["notAfter": "\(identity.certificate.notValidAfter)"])
            return nil
        case .storeCertificate(let pem, _):
            let certificate = try PEM.certificate(from: pem)
            guard certificate.publicKey == Certificate.PublicKey(identity.privateKey.publicKey),
                certificate.issuer == identity.caCertificate.subject,
                identity.caCertificate.publicKey.isValidSignature(certificate.signature, for: certificate)
            else {
                logger.error("the renewed certificate does not match this node's key and CA; keeping the old one")
                return nil
            }
            try identity.saveCertificate(pem, stateDirectory: configuration.stateDirectory)
            identity.certificate = certificate
            statusBox.withLock { $0.renewals += 1 }
            logger.info("certificate renewed", metadata: ["notAfter": "\(certificate.notValidAfter)"])
            return nil
        case .reconnect, .stop:
            return action
        }
    }

    /// Stores the module key the coordinator sent and opens module transfer for this session.
    private func welcomed(_ welcome: Welcome, outbound: NIOAsyncChannelOutboundWriter<Envelope>) {
        if let key = welcome.modulePublicKey {
            do {
                if try ModuleKeyFile.store(key, stateDirectory: configuration.stateDirectory) {
                    logger.info("stored the cluster's module key")
                }
            } catch {
                logger.warning("cannot store the cluster's module key", metadata: ["error": "\(error)"])
            }
        }
        objects?.attach(version: welcome.protocolVersion) { envelope in
            try await outbound.write(envelope)
        }
    }

    private func sendHeartbeat(_ outbound: NIOAsyncChannelOutboundWriter<Envelope>) async throws {
        try await outbound.write(try Message.heartbeat(Heartbeat(report: await health.report())).envelope())
        statusBox.withLock { $0.heartbeatsSent += 1 }
    }
}
