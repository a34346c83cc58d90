import Foundation
import Shared

/// The agent's side of a node session as a value: events in, actions out (STYLE §9).
///
/// `CoordinatorSession` feeds it connection events, frames and heartbeat ticks and performs the returned
/// actions; time comes in as arguments, so tests drive it with fixed dates.
public struct SessionStateMachine: Sendable {
    public enum State: Sendable, Equatable {
        case disconnected
        case connecting
        case awaitingWelcome
        case established
        case stopped
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Open a TLS connection.
        case connect
        /// Send `hello`.
        case sendHello(Hello)
        /// Start (or keep) beating at this interval.
        case startHeartbeats(interval: Duration)
        case updateHeartbeatInterval(Duration)
        case sendHeartbeat
        /// Send a heartbeat, then a `renewCertificate` with a new CSR.
        case sendHeartbeatAndRenew
        /// Write the renewed certificate to the state dir.
        case storeCertificate(pem: String, notAfter: Date)
        /// Close the connection and connect again after the delay.
        case reconnect(after: Duration)
        /// Hand a task to the task runner.
        case runTask(AssignTask)
        /// Stop a task.
        case cancelTask(UUID)
        /// The coordinator stored a task result; stop re-sending it.
        case acknowledgeResult(UUID)
        /// Give up for good (forgotten node, incompatible versions); the agent exits with this error.
        case stop(StopReason)
    }

    /// Why the session gave up; ``error`` is what the agent exits with.
    public struct StopReason: Sendable, Equatable {
        public var code: MusterError.Code
        public var message: String
        public var hint: String?

        public init(_ error: MusterError) {
            code = error.code
            message = error.message
            hint = error.hint
        }

        public var error: MusterError { MusterError(code, message, hint: hint) }
    }

    public private(set) var state: State = .disconnected
    /// Consecutive failed connection attempts (reset by a `welcome`).
    public private(set) var failures = 0
    public private(set) var heartbeatInterval: Duration = .seconds(10)
    public let nodeID: UUID
    public let agentVersion: String
    public let backoff: Backoff
    /// The agent never beats faster than this, whatever the coordinator assigns.
    public let minimumHeartbeatInterval: Duration
    /// Validity of the certificate in use; renewal is due at 2/3 of it.
    public private(set) var certificateNotBefore: Date
    public private(set) var certificateNotAfter: Date
    private var renewalPending = false
    /// Heartbeats sent since the last `heartbeatAck`; too many means the coordinator is gone without a TCP reset.
    public private(set) var unacknowledgedHeartbeats = 0
    /// After this many unanswered heartbeats the connection is considered dead and re-established.
    public static let maximumUnacknowledgedHeartbeats = 3

    public init(
        nodeID: UUID, agentVersion: String, certificateNotBefore: Date, certificateNotAfter: Date,
        backoff: Backoff = Backoff(), minimumHeartbeatInterval: Duration = .milliseconds(100)
    ) {
        self.nodeID = nodeID
        self.agentVersion = agentVersion
        self.certificateNotBefore = certificateNotBefore
        self.certificateNotAfter = certificateNotAfter
        self.backoff = backoff
        self.minimumHeartbeatInterval = minimumHeartbeatInterval
    }

    /// When the certificate should be renewed: 2/3 into its lifetime.
    public var renewalDate: Date {
        certificateNotBefore.addingTimeInterval(certificateNotAfter.timeIntervalSince(certificateNotBefore) * 2 / 3)
    }

    public mutating func start() -> Action {
        guard state == .disconnected else { return .none }
        state = .connecting
        return .connect
    }

    /// - Parameter finishedTaskIDs: Finished tasks whose results the coordinator has not acknowledged yet.
    public mutating func connected(finishedTaskIDs: [UUID] = []) -> Action {
        guard state == .connecting else { return .none }
        state = .awaitingWelcome
        return .sendHello(Hello(nodeID: nodeID, agentVersion: agentVersion, finishedTaskIDs: finishedTaskIDs))
    }

    public mutating func received(_ message: Message, now: Date) -> Action {
        switch (state, message) {
        case (.awaitingWelcome, .welcome(let welcome)):
            state = .established
            failures = 0
            renewalPending = false
            unacknowledgedHeartbeats = 1  // startHeartbeats sends the first one at once
            heartbeatInterval = max(minimumHeartbeatInterval, welcome.heartbeatInterval)
            return .startHeartbeats(interval: heartbeatInterval)
        case (.established, .heartbeatAck(let ack)):
            unacknowledgedHeartbeats = 0
            let interval = max(minimumHeartbeatInterval, ack.heartbeatInterval)
            guard interval != heartbeatInterval else { return .none }
            heartbeatInterval = interval
            return .updateHeartbeatInterval(interval)
        case (.established, .certificateRenewed(let renewed)):
            renewalPending = false
            certificateNotBefore = now
            certificateNotAfter = renewed.notAfter
            return .storeCertificate(pem: renewed.certificatePEM, notAfter: renewed.notAfter)
        case (.established, .assignTask(let assign)):
            return .runTask(assign)
        case (.established, .cancelTask(let cancel)):
            return .cancelTask(cancel.taskID)
        case (.established, .taskResultAck(let ack)):
            return .acknowledgeResult(ack.taskID)
        case (_, .error(let body)):
            return errorFrame(body, now: now)
        case (.stopped, _):
            return .none
        default:
            return connectionLost(
                MusterError(.protocolError, "unexpected \(message.type) from the coordinator"), unitRandom: 1)
        }
    }

    /// The heartbeat timer fired.
    public mutating func heartbeatDue(now: Date) -> Action {
        guard state == .established else { return .none }
        guard unacknowledgedHeartbeats < Self.maximumUnacknowledgedHeartbeats else {
            return connectionLost(
                MusterError(
                    .timeout, "the coordinator answered none of the last \(unacknowledgedHeartbeats) heartbeats"),
                unitRandom: 1)
        }
        unacknowledgedHeartbeats += 1
        if !renewalPending, now >= renewalDate {
            renewalPending = true
            return .sendHeartbeatAndRenew
        }
        return .sendHeartbeat
    }

    /// The connection failed or closed. `unitRandom` is uniform in `[0, 1]` (full jitter).
    public mutating func connectionLost(_ error: any Error, unitRandom: Double) -> Action {
        guard state != .stopped else { return .none }
        if let error = error as? MusterError, error.code == .nodeForgotten || error.code == .protocolVersion {
            state = .stopped
            return .stop(StopReason(error))
        }
        let delay = backoff.delay(attempt: failures, unitRandom: unitRandom)
        failures += 1
        state = .disconnected
        return .reconnect(after: delay)
    }

    /// The reconnect delay passed.
    public mutating func retry() -> Action {
        start()
    }

    private mutating func errorFrame(_ body: ErrorMessage, now: Date) -> Action {
        let error = body.musterError
        if Self.isFatal(error.code) {
            state = .stopped
            return .stop(StopReason(error))
        }
        if state == .established, error.code == .invalidInput || error.code == .databaseUnavailable {
            // A renewal the coordinator could not do now: try again at the next heartbeat.
            renewalPending = false
            return .none
        }
        return connectionLost(error, unitRandom: 1)
    }

    /// Error frames after which reconnecting cannot help: the coordinator forgot or does not know this node,
    /// or we speak no common protocol version. (Local TLS failures are retried: the coordinator may be
    /// replaced or misconfigured for a while.)
    static func isFatal(_ code: MusterError.Code) -> Bool {
        code == .nodeForgotten || code == .certificateRejected || code == .protocolVersion || code == .forbidden
    }
}
