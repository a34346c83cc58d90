import Crypto
import Foundation
import X509

/// Names and rules of Muster's PKI that agent and coordinator must agree on (DESIGN §2).
public enum MusterPKI {
    /// The DNS name every coordinator server certificate carries and every agent verifies, whatever address
    /// it dialled (like Nomad's `server.<region>.nomad`).
    public static let coordinatorServerName = "coordinator.muster.internal"

    /// Organization of the throwaway self-signed certificate a joining agent presents on port 7400.
    public static let bootstrapOrganization = "muster-bootstrap"

    /// Organization of every certificate the cluster CA issues.
    public static let clusterOrganization = "muster"

    /// Lifetime of a bootstrap certificate; it is only used for one join connection.
    public static let bootstrapValidity: TimeInterval = 3600

    /// Makes a PKCS#10 certificate signing request for `key` with the given common name, as PEM.
    ///
    /// The CA ignores the requested subject and sets CN = node id itself; the CSR proves possession of the key.
    public static func makeCSR(key: P256.Signing.PrivateKey, commonName: String) throws -> String {
        do {
            let subject = try DistinguishedName {
                OrganizationName(clusterOrganization)
                CommonName(commonName)
            }
            let csr = try CertificateSigningRequest(
                version: .v1, subject: subject, privateKey: Certificate.PrivateKey(key), attributes: .init(),
                signatureAlgorithm: .ecdsaWithSHA256)
            return try PEM.encode(csr)
        } catch let error as MusterError {
            throw error
        } catch {
            throw MusterError(
                .internal, "could not create a certificate signing request", cause: UnderlyingError(error))
        }
    }

    /// Makes the self-signed bootstrap certificate a joining agent presents, from its newly generated key.
    ///
    /// Subject `O=muster-bootstrap, CN=<hostname>`, one hour, client auth only. The coordinator accepts it on
    /// port 7400 for a single `joinRequest` and nothing else.
    public static func makeBootstrapCertificate(key: P256.Signing.PrivateKey, hostname: String, now: Date = Date())
        throws -> Certificate
    {
        do {
            let name = try DistinguishedName {
                OrganizationName(bootstrapOrganization)
                CommonName(hostname.isEmpty ? "agent" : hostname)
            }
            let publicKey = Certificate.PublicKey(key.publicKey)
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(bootstrapValidity),
                issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.clientAuth])
                },
                issuerPrivateKey: Certificate.PrivateKey(key))
        } catch {
            throw MusterError(.internal, "could not create the bootstrap certificate", cause: UnderlyingError(error))
        }
    }

    /// Whether a certificate is a well-formed bootstrap certificate: self-issued with `O=muster-bootstrap`,
    /// signed by its own key, within its validity period.
    public static func isValidBootstrapCertificate(_ certificate: Certificate, now: Date = Date()) -> Bool {
        guard isBootstrapSubject(certificate.subject), certificate.issuer == certificate.subject else { return false }
        guard certificate.notValidBefore <= now, now <= certificate.notValidAfter else { return false }
        return certificate.publicKey.isValidSignature(certificate.signature, for: certificate)
    }

    /// Whether a distinguished name has `O=muster-bootstrap`.
    public static func isBootstrapSubject(_ name: DistinguishedName) -> Bool {
        organization(of: name) == bootstrapOrganization
    }

    /// The first organization (O) of a name.
    public static func organization(of name: DistinguishedName) -> String? {
        for rdn in name {
            for attribute in rdn where attribute.type == .RDNAttributeType.organizationName {
                return String(attribute.value)
            }
        }
        return nil
    }

    /// The first common name (CN) of a name.
    public static func commonName(of name: DistinguishedName) -> String? {
        for rdn in name {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                return String(attribute.value)
            }
        }
        return nil
    }
}
