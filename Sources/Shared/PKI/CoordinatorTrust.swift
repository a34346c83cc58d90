import Crypto
import Foundation
import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// How an agent decides whether the server it dialled is a coordinator of its cluster (DESIGN §2).
///
/// Used as NIOSSL's custom verification callback on the agent side, so nothing is sent — in particular not the
/// join token's secret — unless the server presented a leaf for ``MusterPKI/coordinatorServerName`` signed by
/// the trusted CA.
public enum CoordinatorTrust: Sendable, Equatable {
    /// Joining: the server must send its CA in the chain, and that CA's SubjectPublicKeyInfo must hash to
    /// the pin from the join token.
    case pinned(CAPin)
    /// Joined: the CA certificate stored at join time.
    case certificateAuthority(Certificate)

    /// Verifies the chain a server presented (leaf first).
    ///
    /// Validity periods are checked against the current time.
    ///
    /// - Returns: the CA the chain was verified against.
    /// - Throws: `MusterError` `.caPinMismatch` when no presented CA matches the pin, `.certificateRejected`
    ///   when the leaf does not chain to the CA or does not name the coordinator.
    public func verify(presented chain: [Certificate]) async throws -> Certificate {
        guard let leaf = chain.first else {
            throw MusterError(.certificateRejected, "the coordinator presented no certificate")
        }
        let root: Certificate
        switch self {
        case .pinned(let pin):
            guard let match = chain.dropFirst().first(where: { CAPin(certificate: $0) == pin }) else {
                let seen = chain.dropFirst().map { CAPin(certificate: $0).description }
                throw MusterError(
                    .caPinMismatch,
                    "the server's CA does not match the join token's CA pin \(pin) (server sent: "
                        + (seen.isEmpty ? "no CA certificate" : seen.joined(separator: ", ")) + ")",
                    hint: "check --coordinator points at the coordinator that created the token; no secret was sent")
            }
            root = match
        case .certificateAuthority(let ca):
            root = ca
        }
        var verifier = Verifier(rootCertificates: CertificateStore([root])) {
            RFC5280Policy()
            ServerIdentityPolicy(serverHostname: MusterPKI.coordinatorServerName, serverIP: nil)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore())
        switch result {
        case .validCertificate:
            return root
        case .couldNotValidate(let failures):
            let reasons = failures.map { String(describing: $0.policyFailureReason) }.joined(separator: "; ")
            throw MusterError(
                .certificateRejected,
                "the coordinator's certificate is not valid for \(MusterPKI.coordinatorServerName) under the "
                    + "cluster CA" + (reasons.isEmpty ? "" : ": \(reasons)"))
        }
    }

    /// A NIOSSL custom verification callback applying ``verify(presented:)``.
    ///
    /// - Parameter onFailure: receives the precise reason when verification fails (the TLS error itself only
    ///   says the handshake failed), so the caller can report it.
    public func makeVerificationCallback(onFailure: @escaping @Sendable (MusterError) -> Void)
        -> NIOSSLCustomVerificationCallback
    {
        let trust = self
        return { certificates, promise in
            let chain: [Certificate]
            do {
                chain = try certificates.map { try Certificate(derEncoded: try $0.toDERBytes()) }
            } catch {
                onFailure(MusterError(.certificateRejected, "the coordinator's certificate does not parse"))
                promise.succeed(.failed)
                return
            }
            promise.completeWithTask {
                do {
                    _ = try await trust.verify(presented: chain)
                    return .certificateVerified
                } catch let error as MusterError {
                    onFailure(error)
                    return .failed
                } catch {
                    onFailure(MusterError(.certificateRejected, "verification failed", cause: UnderlyingError(error)))
                    return .failed
                }
            }
        }
    }
}

extension TLSConfiguration {
    /// Client configuration of an agent: TLS 1.3 only, presenting `certificateChain` with `privateKey`.
    ///
    /// Server verification is done by ``CoordinatorTrust`` through a custom verification callback on the
    /// `NIOSSLClientHandler`; this configuration only asks for a verified peer.
    public static func musterAgentClient(certificateChain: [Certificate], privateKey: P256.Signing.PrivateKey)
        throws -> TLSConfiguration
    {
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv13
        config.certificateVerification = .noHostnameVerification
        config.certificateChain = try certificateChain.map {
            .certificate(try NIOSSLCertificate(bytes: try PEM.der($0), format: .der))
        }
        config.privateKey = .privateKey(
            try NIOSSLPrivateKey(bytes: Array(privateKey.pemRepresentation.utf8), format: .pem))
        return config
    }

    /// Client configuration for the admin CLI: TLS 1.3, the admin certificate, trusting only the cluster CA,
    /// full hostname verification (the coordinator's certificate names its hostname, its addresses and
    /// ``MusterPKI/coordinatorServerName``).
    public static func musterAdminClient(certificatePEM: String, privateKeyPEM: String, caCertificatePEM: String)
        throws -> TLSConfiguration
    {
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv13
        config.certificateVerification = .fullVerification
        config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caCertificatePEM.utf8)))
        config.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map {
            .certificate($0)
        }
        config.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem))
        return config
    }
}
