import Foundation

/// Agent → coordinator, first frame of a node session.
public struct Hello: Codable, Sendable, Equatable {
    /// Must equal the CN of the client certificate the session was opened with.
    public var nodeID: UUID
    public var agentVersion: String
    /// Every protocol version the agent speaks.
    public var protocolVersions: [ProtocolVersion]
    /// Tasks the agent finished while disconnected (re-reported on reconnect; empty until tasks exist).
    public var finishedTaskIDs: [UUID]

    public init(
        nodeID: UUID, agentVersion: String, protocolVersions: [ProtocolVersion] = ProtocolVersion.supported,
        finishedTaskIDs: [UUID] = []
    ) {
        self.nodeID = nodeID
        self.agentVersion = agentVersion
        self.protocolVersions = protocolVersions
        self.finishedTaskIDs = finishedTaskIDs
    }
}
