import Crypto
import Foundation
import Logging
import NIOCore
import Shared
import X509

/// Joins this host to a cluster (DESIGN §2): makes the node key, checks the coordinator against the token's
/// CA pin during the TLS handshake (so the secret goes nowhere else), sends CSR + host facts, checks and stores
/// the returned identity.
public struct JoinClient: Sendable {
    public var coordinator: CoordinatorAddress
    public var token: JoinToken
    public var stateDirectory: String
    public var facts: HostFacts
    public var logger: Logger

    public init(
        coordinator: CoordinatorAddress, token: JoinToken, stateDirectory: String, facts: HostFacts, logger: Logger
    ) {
        self.coordinator = coordinator
        self.token = token
        self.stateDirectory = stateDirectory
        self.facts = facts
        self.logger = logger
    }

    /// Runs the join and saves the identity.
    ///
    /// - Throws: `MusterError` with the coordinator's code (`.tokenExpired`, `.tokenUnknown`, `.tokenUsedUp`,
    ///   `.tokenRevoked`, …), `.caPinMismatch` when the server's CA is not the pinned one, `.conflict` when the
    ///   state dir already holds an identity, `.connectionFailed` when the coordinator cannot be reached.
    @discardableResult
    public func join() async throws -> NodeIdentity {
        if NodeIdentity.exists(stateDirectory: stateDirectory) {
            let paths = NodeIdentity.Paths(stateDirectory: stateDirectory)
            throw MusterError(
                .conflict, "this host already joined a cluster (\(paths.directory) exists)",
                hint: "run `muster-agent run`, or remove \(paths.directory) to join again as a new node")
        }
        let key = P256.Signing.PrivateKey()
        let bootstrap = try MusterPKI.makeBootstrapCertificate(key: key, hostname: facts.hostname)
        let csrPEM = try MusterPKI.makeCSR(key: key, commonName: facts.hostname.isEmpty ? "node" : facts.hostname)
        let request = JoinRequest(tokenID: token.id, secret: token.secret, csrPEM: csrPEM, facts: facts)
        logger.info(
            "joining", metadata: ["coordinator": "\(coordinator)", "token": "\(token.id)", "ca": "\(token.caPin)"])

        let response: JoinResponse = try await CoordinatorConnection.withConnection(
            to: coordinator, certificateChain: [bootstrap], privateKey: key, trust: .pinned(token.caPin)
        ) { inbound, outbound in
            try await outbound.write(try Message.joinRequest(request).envelope())
            let (_, message) = try await CoordinatorConnection.firstMessage(inbound)
            switch message {
            case .joinResponse(let response):
                return response
            case .error(let body):
                throw body.musterError
            default:
                throw MusterError(.protocolError, "the coordinator answered the join with \(message.type)")
            }
        }

        let identity = try verify(response, key: key)
        try identity.save(stateDirectory: stateDirectory)
        if let key = response.modulePublicKey {
            try ModuleKeyFile.store(key, stateDirectory: stateDirectory)
        }
        logger.info(
            "joined", metadata: ["node": "\(identity.nodeID)", "notAfter": "\(identity.certificate.notValidAfter)"])
        return identity
    }

    /// Checks the returned certificate before trusting it: the CA is the pinned one, the certificate is for
    /// our key, names the node, and is signed by that CA.
    func verify(_ response: JoinResponse, key: P256.Signing.PrivateKey) throws -> NodeIdentity {
        let ca = try PEM.certificate(from: response.caCertificatePEM)
        guard CAPin(certificate: ca) == token.caPin else {
            throw MusterError(.caPinMismatch, "the coordinator returned a CA that does not match the token's pin")
        }
        let certificate = try PEM.certificate(from: response.certificatePEM)
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
            throw MusterError(.certificateRejected, "the coordinator returned a certificate for a different key")
        }
        guard MusterPKI.commonName(of: certificate.subject) == response.nodeID.uuidString.lowercased() else {
            throw MusterError(.certificateRejected, "the returned certificate does not name node \(response.nodeID)")
        }
        guard certificate.issuer == ca.subject, ca.publicKey.isValidSignature(certificate.signature, for: certificate)
        else {
            throw MusterError(.certificateRejected, "the returned certificate is not signed by the cluster CA")
        }
        return NodeIdentity(
            nodeID: response.nodeID, coordinator: coordinator, privateKey: key, certificate: certificate,
            caCertificate: ca)
    }
}
