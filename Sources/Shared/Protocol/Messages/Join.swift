import Foundation

/// Agent → coordinator, the only frame a bootstrap (not yet joined) connection may send.
///
/// `description` leaves out the secret.
public struct JoinRequest: Codable, Sendable, Equatable, CustomStringConvertible {
    public var tokenID: String
    public var secret: String
    /// PKCS#10 request for the agent's own P-256 key, PEM.
    public var csrPEM: String
    public var facts: HostFacts

    public init(tokenID: String, secret: String, csrPEM: String, facts: HostFacts) {
        self.tokenID = tokenID
        self.secret = secret
        self.csrPEM = csrPEM
        self.facts = facts
    }

    public var description: String { "JoinRequest(token: \(tokenID), host: \(facts.hostname))" }
}

/// Coordinator → agent, answer to ``JoinRequest``.
public struct JoinResponse: Codable, Sendable, Equatable {
    public var nodeID: UUID
    /// The node's client certificate (CN = node id), PEM.
    public var certificatePEM: String
    /// The cluster CA certificate, PEM; the agent trusts only this from now on.
    public var caCertificatePEM: String
    public var heartbeatIntervalMilliseconds: Int
    /// Base64 of the cluster's raw Ed25519 module public key (optional: older coordinators leave it out).
    public var modulePublicKey: String?

    public init(
        nodeID: UUID, certificatePEM: String, caCertificatePEM: String, heartbeatInterval: Duration,
        modulePublicKey: String? = nil
    ) {
        self.modulePublicKey = modulePublicKey
        self.nodeID = nodeID
        self.certificatePEM = certificatePEM
        self.caCertificatePEM = caCertificatePEM
        self.heartbeatIntervalMilliseconds = heartbeatInterval.wireMilliseconds
    }

    public var heartbeatInterval: Duration { .milliseconds(heartbeatIntervalMilliseconds) }
}
