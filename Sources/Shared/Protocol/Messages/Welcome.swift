import Foundation

/// Coordinator → agent, answer to ``Hello``.
public struct Welcome: Codable, Sendable, Equatable {
    public var nodeID: UUID
    /// The version both sides will speak.
    public var protocolVersion: ProtocolVersion
    /// How often to send a heartbeat, assigned by the coordinator (scaled to its heartbeat budget).
    public var heartbeatIntervalMilliseconds: Int
    /// The coordinator's clock, for the agent to log skew.
    public var serverTime: Date
    /// Base64 of the cluster's raw Ed25519 module public key, which signs module descriptors (optional: older
    /// coordinators leave it out).
    public var modulePublicKey: String?

    public init(
        nodeID: UUID, protocolVersion: ProtocolVersion, heartbeatInterval: Duration, serverTime: Date,
        modulePublicKey: String? = nil
    ) {
        self.modulePublicKey = modulePublicKey
        self.nodeID = nodeID
        self.protocolVersion = protocolVersion
        self.heartbeatIntervalMilliseconds = heartbeatInterval.wireMilliseconds
        self.serverTime = serverTime
    }

    public var heartbeatInterval: Duration { .milliseconds(heartbeatIntervalMilliseconds) }
}
