import Shared

import struct Foundation.Date
import struct Foundation.UUID

/// A node as the store knows it.
public struct NodeRecord: Sendable, Equatable, Codable {
    public var id: UUID
    public var state: NodeState
    public var facts: HostFacts
    public var labels: [String: String]
    public var joinedAt: Date
    public var lastSeen: Date?
    public var lastReport: HealthReport?

    public init(
        id: UUID, state: NodeState, facts: HostFacts, labels: [String: String], joinedAt: Date,
        lastSeen: Date? = nil, lastReport: HealthReport? = nil
    ) {
        self.id = id
        self.state = state
        self.facts = facts
        self.labels = labels
        self.joinedAt = joinedAt
        self.lastSeen = lastSeen
        self.lastReport = lastReport
    }
}

/// Whether a node may hold a session.
public enum NodeAdmission: Sendable, Equatable {
    case admitted
    /// `muster nodes forget` was run for it; its certificate is revoked.
    case forgotten
    case unknown
}

/// What the agent listener needs from the coordinator's store. Implemented over PostgreSQL by
/// `NodeStore`; the contract between the listener (PKI, sessions) and the store (tokens, nodes, heartbeats).
public protocol NodeDirectory: Sendable {
    /// Checks the join token (id + secret), consumes one use and creates the node in state `joining`,
    /// all in one transaction. Throws `MusterError` with `.tokenUnknown`, `.tokenExpired`, `.tokenUsedUp`
    /// or `.tokenRevoked`. Returns the new node (labels from the token).
    func redeemJoinToken(tokenID: String, secret: String, facts: HostFacts, now: Date) async throws -> NodeRecord

    /// Records a certificate issued to a node (join or renewal).
    func recordCertificate(nodeID: UUID, serial: String, notAfter: Date, pem: String) async throws

    /// Whether a node id from a verified client certificate may hold a session.
    func admission(of nodeID: UUID) async throws -> NodeAdmission

    /// A session was established: the node becomes `ready` (from joining or unreachable). `address` is the
    /// agent's remote IP address as the listener sees it. Throws `MusterError` `.nodeForgotten` for a
    /// forgotten node (the listener then closes the session).
    func sessionOpened(nodeID: UUID, at: Date, address: String?) async throws

    /// Queues a heartbeat for the next batched flush; never blocks on the database.
    func enqueueHeartbeat(nodeID: UUID, report: HealthReport, receivedAt: Date)
}
