import Crypto
import Foundation
import Logging
import NIOSSL
import Shared
import SwiftASN1
import X509

/// The cluster's PKI on the coordinator (DESIGN §2): cluster CA (P-256), coordinator server certificate,
/// admin client certificate and the Ed25519 module signing key, kept under one directory with 0600 keys.
///
/// Files in ``directory`` (normally `<state-dir>/pki`):
/// `ca.crt`, `ca.key`, `server.crt` (leaf, then CA), `server.key`, `admin.crt`, `admin.key`,
/// `module-signing.key` (Ed25519, PEM PKCS#8).
///
/// Immutable after ``loadOrCreate(directory:serverNames:serverAddresses:logger:)``; therefore `Sendable`.
public final class CertificateAuthority: Sendable {
    /// OU of node certificates.
    public static let nodeOrganizationalUnit = "node"
    /// OU of the admin client certificate.
    public static let adminOrganizationalUnit = "admin"
    /// CN of the admin client certificate; the admin API accepts client certificates with this CN only.
    public static let adminCommonName = "muster-admin"

    /// Default lifetime of a node certificate (renewed at 2/3 of it).
    public static let defaultNodeCertificateValidity: Duration = .seconds(24 * 3600)

    /// The PKI directory.
    public let directory: String
    public let caCertificate: Certificate
    /// The cluster CA certificate, PEM.
    public let caCertificatePEM: String
    /// SHA-256 of the CA's SubjectPublicKeyInfo, as embedded in join tokens.
    public let caPin: CAPin
    public let serverCertificate: Certificate
    /// Server leaf followed by the CA certificate, PEM (the chain agents need to check the pin).
    public let serverCertificateChainPEM: String
    public let serverPrivateKeyPEM: String
    public let adminCertificatePEM: String
    public let adminPrivateKeyPEM: String
    /// Signs module manifests and image digests (modules issue).
    public let moduleSigningKey: Curve25519.Signing.PrivateKey

    private let signer: CSRSigner
    private let serverKey: P256.Signing.PrivateKey

    /// Paths of the files, for the CLI and `openssl` in tests.
    public struct Paths: Sendable {
        public var caCertificate: String
        public var caKey: String
        public var serverCertificate: String
        public var serverKey: String
        public var adminCertificate: String
        public var adminKey: String
        public var moduleSigningKey: String

        public init(directory: String) {
            caCertificate = "\(directory)/ca.crt"
            caKey = "\(directory)/ca.key"
            serverCertificate = "\(directory)/server.crt"
            serverKey = "\(directory)/server.key"
            adminCertificate = "\(directory)/admin.crt"
            adminKey = "\(directory)/admin.key"
            moduleSigningKey = "\(directory)/module-signing.key"
        }
    }

    public var paths: Paths { Paths(directory: directory) }

    private init(
        directory: String, caCertificate: Certificate, caKey: P256.Signing.PrivateKey, serverCertificate: Certificate,
        serverKey: P256.Signing.PrivateKey, adminCertificatePEM: String, adminPrivateKeyPEM: String,
        moduleSigningKey: Curve25519.Signing.PrivateKey
    ) throws {
        self.directory = directory
        self.caCertificate = caCertificate
        self.caCertificatePEM = try PEM.encode(caCertificate)
        self.caPin = CAPin(certificate: caCertificate)
        self.serverCertificate = serverCertificate
        self.serverCertificateChainPEM = try PEM.encode(serverCertificate) + caCertificatePEM
        self.serverKey = serverKey
        self.serverPrivateKeyPEM = serverKey.pemRepresentation
        self.adminCertificatePEM = adminCertificatePEM
        self.adminPrivateKeyPEM = adminPrivateKeyPEM
        self.moduleSigningKey = moduleSigningKey
        self.signer = CSRSigner(caCertificate: caCertificate, caKey: caKey)
    }

    // MARK: - Load or create

    /// Loads the PKI from `directory`, creating whatever is missing.
    ///
    /// The server certificate is (re)issued when missing, when it expires within 30 days, or when it does not
    /// cover all requested names and addresses. It always names ``MusterPKI/coordinatorServerName``, the
    /// host name, `localhost`, `127.0.0.1` and `::1` as well.
    ///
    /// - Parameters:
    ///   - directory: The PKI directory, normally `<state-dir>/pki`; created with mode 0700.
    ///   - serverNames: DNS names (from `--advertise` / config); IP literals are moved to the addresses.
    ///   - serverAddresses: IP addresses (listen/advertise addresses; wildcards are skipped).
    /// - Throws: `MusterError` `.io` for file problems, `.invalidInput` for unreadable existing files (they are
    ///   never overwritten: a CA that cannot be read must not silently become a new CA).
    public static func loadOrCreate(
        directory: String, serverNames: [String], serverAddresses: [String], logger: Logger, now: Date = Date()
    ) throws -> CertificateAuthority {
        try SecureFile.makeDirectory(directory, mode: 0o700)
        let paths = Paths(directory: directory)
        let fm = FileManager.default

        // CA
        let caKey: P256.Signing.PrivateKey
        let caCertificate: Certificate
        if fm.fileExists(atPath: paths.caCertificate) || fm.fileExists(atPath: paths.caKey) {
            caKey = try PEM.p256PrivateKey(from: try SecureFile.read(paths.caKey))
            caCertificate = try PEM.certificate(from: try SecureFile.read(paths.caCertificate))
            guard caCertificate.publicKey == Certificate.PublicKey(caKey.publicKey) else {
                throw MusterError(
                    .invalidInput, "\(paths.caCertificate) does not belong to the key in \(paths.caKey)",
                    hint: "restore both files from the same backup")
            }
        } else {
            caKey = P256.Signing.PrivateKey()
            caCertificate = try makeCACertificate(key: caKey, now: now)
            try SecureFile.write(caKey.pemRepresentation, to: paths.caKey, mode: 0o600)
            try SecureFile.write(try PEM.encode(caCertificate), to: paths.caCertificate, mode: 0o644)
            logger.notice("created cluster CA", metadata: ["pin": "\(CAPin(certificate: caCertificate))"])
        }

        // Server certificate
        let (names, addresses) = sanList(serverNames: serverNames, serverAddresses: serverAddresses)
        var serverKey: P256.Signing.PrivateKey?
        var serverCertificate: Certificate?
        if fm.fileExists(atPath: paths.serverCertificate), fm.fileExists(atPath: paths.serverKey) {
            let key = try PEM.p256PrivateKey(from: try SecureFile.read(paths.serverKey))
            let cert = try PEM.certificate(from: try SecureFile.read(paths.serverCertificate))
            let covered = coveredNames(cert)
            let fresh = cert.notValidAfter > now.addingTimeInterval(30 * 86400)
            let signedByCA =
                cert.issuer == caCertificate.subject
                && caCertificate.publicKey.isValidSignature(cert.signature, for: cert)
            if fresh, signedByCA, cert.publicKey == Certificate.PublicKey(key.publicKey),
                Set(names).isSubset(of: covered.names), Set(addresses).isSubset(of: covered.addresses)
            {
                serverKey = key
                serverCertificate = cert
            } else {
                logger.notice("reissuing the coordinator server certificate (names, expiry or CA changed)")
            }
        }
        if serverKey == nil || serverCertificate == nil {
            let key = P256.Signing.PrivateKey()
            let cert = try makeServerCertificate(
                key: key, names: names, addresses: addresses, caCertificate: caCertificate, caKey: caKey, now: now)
            try SecureFile.write(key.pemRepresentation, to: paths.serverKey, mode: 0o600)
            try SecureFile.write(
                try PEM.encode(cert) + PEM.encode(caCertificate), to: paths.serverCertificate, mode: 0o644)
            logger.info(
                "issued coordinator server certificate",
                metadata: ["names": "\(names)", "addresses": "\(addresses)"])
            serverKey = key
            serverCertificate = cert
        }

        // Admin client certificate
        let adminCertificatePEM: String
        let adminKeyPEM: String
        if fm.fileExists(atPath: paths.adminCertificate), fm.fileExists(atPath: paths.adminKey) {
            adminCertificatePEM = try SecureFile.read(paths.adminCertificate)
            adminKeyPEM = try SecureFile.read(paths.adminKey)
        } else {
            let key = P256.Signing.PrivateKey()
            let cert = try makeAdminCertificate(key: key, caCertificate: caCertificate, caKey: caKey, now: now)
            adminKeyPEM = key.pemRepresentation
            adminCertificatePEM = try PEM.encode(cert)
            try SecureFile.write(adminKeyPEM, to: paths.adminKey, mode: 0o600)
            try SecureFile.write(adminCertificatePEM, to: paths.adminCertificate, mode: 0o644)
            logger.info("issued admin client certificate", metadata: ["path": "\(paths.adminCertificate)"])
        }

        // Module signing key
        let moduleKey: Curve25519.Signing.PrivateKey
        if fm.fileExists(atPath: paths.moduleSigningKey) {
            moduleKey = try Ed25519PEM.privateKey(
                from: try SecureFile.read(paths.moduleSigningKey), path: paths.moduleSigningKey)
        } else {
            moduleKey = Curve25519.Signing.PrivateKey()
            try SecureFile.write(Ed25519PEM.encode(moduleKey), to: paths.moduleSigningKey, mode: 0o600)
            logger.info("created module signing key")
        }

        guard let serverKey, let serverCertificate else {
            throw MusterError(.internal, "server certificate missing after creation")
        }
        return try CertificateAuthority(
            directory: directory, caCertificate: caCertificate, caKey: caKey, serverCertificate: serverCertificate,
            serverKey: serverKey, adminCertificatePEM: adminCertificatePEM, adminPrivateKeyPEM: adminKeyPEM,
            moduleSigningKey: moduleKey)
    }

    // MARK: - Signing

    /// Signs a node's CSR: CN = node id, client auth, `validity` from now.
    ///
    /// - Throws: `MusterError` `.invalidInput` for an unusable CSR.
    public func signNodeCSR(_ csrPEM: String, nodeID: UUID, validity: Duration, now: Date = Date()) throws
        -> (certificatePEM: String, serial: String, notAfter: Date)
    {
        let issued = try signer.sign(csrPEM: csrPEM, nodeID: nodeID, validity: validity, now: now)
        return (issued.certificatePEM, issued.serial, issued.notAfter)
    }

    // MARK: - TLS

    /// Server configuration of the agent listener (port 7400): TLS 1.3 only, client certificate required.
    ///
    /// Which client certificates are acceptable (a node certificate of this CA, or a bootstrap certificate) is
    /// decided by the listener's custom verification callback, see ``classifyClient(chain:now:)``.
    public func makeAgentListenerTLSConfiguration() throws -> TLSConfiguration {
        var config = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: try serverChainSources(), privateKey: .privateKey(try nioServerKey()),
            trustRoots: .certificates([try nioCertificate(caCertificate)]))
        config.minimumTLSVersion = .tlsv13
        config.certificateVerification = .noHostnameVerification
        return config
    }

    /// Server configuration of the admin API (port 7401): TLS 1.3 only; a client certificate is optional but
    /// verified against the cluster CA when presented. Handlers must still check the certificate is the admin
    /// one (``isAdminCertificate(_:)``): node certificates chain to the same CA.
    public func makeAdminAPITLSConfiguration() throws -> TLSConfiguration {
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: try serverChainSources(), privateKey: .privateKey(try nioServerKey()))
        config.minimumTLSVersion = .tlsv13
        config.certificateVerification = .optionalVerification
        config.trustRoots = .certificates([try nioCertificate(caCertificate)])
        return config
    }

    /// Whether a (CA-verified) client certificate is the admin certificate.
    public static func isAdminCertificate(_ certificate: Certificate) -> Bool {
        MusterPKI.commonName(of: certificate.subject) == adminCommonName
            && organizationalUnit(of: certificate.subject) == adminOrganizationalUnit
    }

    /// What a client certificate chain presented on port 7400 is.
    public enum ClientIdentity: Sendable, Equatable {
        /// A node certificate of this CA; the node id is its CN.
        case node(UUID)
        /// A valid self-signed bootstrap certificate of a joining agent.
        case bootstrap
        /// The admin client certificate: the handshake succeeds (it is the cluster's), but it may send nothing.
        case admin
    }

    /// Classifies and verifies a client chain (leaf first) presented on port 7400.
    ///
    /// - Throws: `MusterError` `.certificateRejected` for anything else: another CA, an expired certificate,
    ///   a CA-signed certificate that is neither a node nor the admin certificate, a CN that is not a UUID.
    public func classifyClient(chain: [Certificate], now: Date = Date()) async throws -> ClientIdentity {
        guard let leaf = chain.first else {
            throw MusterError(.certificateRejected, "no client certificate")
        }
        if MusterPKI.isBootstrapSubject(leaf.subject) {
            guard MusterPKI.isValidBootstrapCertificate(leaf, now: now) else {
                throw MusterError(.certificateRejected, "invalid bootstrap certificate (not self-signed or expired)")
            }
            return .bootstrap
        }
        var verifier = Verifier(rootCertificates: CertificateStore([caCertificate])) {
            RFC5280Policy()
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst()))
        guard case .validCertificate = result else {
            throw MusterError(
                .certificateRejected, "client certificate is not issued by this cluster's CA (\(leaf.subject))")
        }
        if Self.isAdminCertificate(leaf) { return .admin }
        guard Self.organizationalUnit(of: leaf.subject) == Self.nodeOrganizationalUnit,
            let cn = MusterPKI.commonName(of: leaf.subject), let nodeID = UUID(uuidString: cn)
        else {
            throw MusterError(.certificateRejected, "client certificate is not a node certificate (\(leaf.subject))")
        }
        return .node(nodeID)
    }

    // MARK: - Helpers

    static func hex(_ serial: Certificate.SerialNumber) -> String {
        serial.bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func keyIdentifier(_ key: Certificate.PublicKey) -> ArraySlice<UInt8> {
        ArraySlice(Insecure.SHA1.hash(data: Array(key.subjectPublicKeyInfoBytes)))
    }

    static func organizationalUnit(of name: DistinguishedName) -> String? {
        for rdn in name {
            for attribute in rdn where attribute.type == .RDNAttributeType.organizationalUnitName {
                return String(attribute.value)
            }
        }
        return nil
    }

    private func serverChainSources() throws -> [NIOSSLCertificateSource] {
        [.certificate(try nioCertificate(serverCertificate)), .certificate(try nioCertificate(caCertificate))]
    }

    private func nioServerKey() throws -> NIOSSLPrivateKey {
        try NIOSSLPrivateKey(bytes: Array(serverPrivateKeyPEM.utf8), format: .pem)
    }

    private func nioCertificate(_ certificate: Certificate) throws -> NIOSSLCertificate {
        try NIOSSLCertificate(bytes: try PEM.der(certificate), format: .der)
    }

    private static func sanList(serverNames: [String], serverAddresses: [String]) -> (
        names: [String], addresses: [String]
    ) {
        var names: [String] = [MusterPKI.coordinatorServerName, "localhost"]
        var addresses: [String] = ["127.0.0.1", "::1"]
        let host = localHostname()
        if !host.isEmpty { names.append(host) }
        for name in serverNames + serverAddresses {
            let trimmed = name.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty else { continue }
            if let bytes = ipBytes(trimmed) {
                if bytes.allSatisfy({ $0 == 0 }) { continue }  // 0.0.0.0 / :: are not addresses to verify
                let canonical = canonicalIP(bytes)
                if !addresses.contains(canonical) { addresses.append(canonical) }
            } else if !names.contains(trimmed.lowercased()) {
                names.append(trimmed.lowercased())
            }
        }
        return (names, addresses)
    }

    private static func coveredNames(_ cert: Certificate) -> (names: Set<String>, addresses: Set<String>) {
        var names = Set<String>()
        var addresses = Set<String>()
        if let san = try? cert.extensions.subjectAlternativeNames {
            for entry in san {
                switch entry {
                case .dnsName(let n): names.insert(n.lowercased())
                case .ipAddress(let octets): addresses.insert(canonicalIP(Array(octets.bytes)))
                default: continue
                }
            }
        }
        return (names, addresses)
    }

    /// gethostname(2); not `ProcessInfo.hostName`, which resolves names and can block for a minute without DNS.
    static func localHostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func ipBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    static func canonicalIP(_ bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return bytes.map(String.init).joined(separator: ".") }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func makeCACertificate(key: P256.Signing.PrivateKey, now: Date) throws -> Certificate {
        do {
            let name = try DistinguishedName {
                OrganizationName(MusterPKI.clusterOrganization)
                CommonName("Muster cluster CA")
            }
            let publicKey = Certificate.PublicKey(key.publicKey)
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
                issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(keyIdentifier: keyIdentifier(publicKey))
                },
                issuerPrivateKey: Certificate.PrivateKey(key))
        } catch {
            throw MusterError(.internal, "could not create the cluster CA", cause: UnderlyingError(error))
        }
    }

    private static func makeServerCertificate(
        key: P256.Signing.PrivateKey, names: [String], addresses: [String], caCertificate: Certificate,
        caKey: P256.Signing.PrivateKey, now: Date
    ) throws -> Certificate {
        do {
            let subject = try DistinguishedName {
                OrganizationName(MusterPKI.clusterOrganization)
                CommonName(MusterPKI.coordinatorServerName)
            }
            var sans: [GeneralName] = names.map { .dnsName($0) }
            for address in addresses {
                if let bytes = ipBytes(address) {
                    sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
                }
            }
            let publicKey = Certificate.PublicKey(key.publicKey)
            let alternativeNames = SubjectAlternativeNames(sans)
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(365 * 86400),
                issuer: caCertificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth])
                    alternativeNames
                    AuthorityKeyIdentifier(keyIdentifier: keyIdentifier(caCertificate.publicKey))
                },
                issuerPrivateKey: Certificate.PrivateKey(caKey))
        } catch {
            throw MusterError(.internal, "could not create the server certificate", cause: UnderlyingError(error))
        }
    }

    private static func makeAdminCertificate(
        key: P256.Signing.PrivateKey, caCertificate: Certificate, caKey: P256.Signing.PrivateKey, now: Date
    ) throws -> Certificate {
        do {
            let subject = try DistinguishedName {
                OrganizationName(MusterPKI.clusterOrganization)
                OrganizationalUnitName(adminOrganizationalUnit)
                CommonName(adminCommonName)
            }
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
                notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(5 * 365 * 86400),
                issuer: caCertificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.clientAuth])
                    AuthorityKeyIdentifier(keyIdentifier: keyIdentifier(caCertificate.publicKey))
                },
                issuerPrivateKey: Certificate.PrivateKey(caKey))
        } catch {
            throw MusterError(.internal, "could not create the admin certificate", cause: UnderlyingError(error))
        }
    }
}
