import Crypto
import Foundation
import Shared
import SwiftASN1
import X509

/// Signs node certificates: CN = node id, client auth only, short lifetime (DESIGN §2).
///
/// The requested subject and extensions of the CSR are ignored; the CSR only proves that the agent holds the
/// key. A value type so signing has no shared state.
public struct CSRSigner: Sendable {
    public let caCertificate: Certificate
    let caKey: P256.Signing.PrivateKey

    public init(caCertificate: Certificate, caKey: P256.Signing.PrivateKey) {
        self.caCertificate = caCertificate
        self.caKey = caKey
    }

    /// A certificate the CA issued.
    public struct Issued: Sendable {
        public var certificate: Certificate
        public var certificatePEM: String
        /// Serial number, lower-case hex.
        public var serial: String
        public var notAfter: Date
    }

    /// Signs a node's CSR.
    ///
    /// - Parameters:
    ///   - csrPEM: PKCS#10 request, PEM.
    ///   - nodeID: Becomes the certificate's CN.
    ///   - validity: Lifetime from now; the start is backdated by a tenth of it, at most five minutes, for
    ///     clock skew between coordinator and node.
    /// - Throws: `MusterError` `.invalidInput` for an unparsable CSR, a bad signature or a key other than
    ///   P-256.
    public func sign(csrPEM: String, nodeID: UUID, validity: Duration, now: Date = Date()) throws -> Issued {
        let csr = try PEM.certificateSigningRequest(from: csrPEM)
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw MusterError(.invalidInput, "the certificate signing request's signature does not verify")
        }
        guard P256.Signing.PublicKey(csr.publicKey) != nil else {
            throw MusterError(.invalidInput, "node keys must be P-256 (ECDSA)")
        }
        let seconds = Double(validity.components.seconds) + Double(validity.components.attoseconds) / 1e18
        let notAfter = now.addingTimeInterval(seconds)
        let notBefore = now.addingTimeInterval(-min(300, seconds / 10))
        do {
            let subject = try DistinguishedName {
                OrganizationName(MusterPKI.clusterOrganization)
                OrganizationalUnitName(CertificateAuthority.nodeOrganizationalUnit)
                CommonName(nodeID.uuidString.lowercased())
            }
            let serial = Certificate.SerialNumber()
            let certificate = try Certificate(
                version: .v3, serialNumber: serial, publicKey: csr.publicKey,
                notValidBefore: notBefore, notValidAfter: notAfter,
                issuer: caCertificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.clientAuth])
                    AuthorityKeyIdentifier(keyIdentifier: CertificateAuthority.keyIdentifier(caCertificate.publicKey))
                },
                issuerPrivateKey: Certificate.PrivateKey(caKey))
            return Issued(
                certificate: certificate, certificatePEM: try PEM.encode(certificate),
                serial: CertificateAuthority.hex(serial), notAfter: certificate.notValidAfter)
        } catch {
            throw MusterError(.internal, "could not sign the node certificate", cause: UnderlyingError(error))
        }
    }
}
