import Crypto
import Foundation
import Shared
import Testing
import X509

@Suite("PKI helpers")
struct PKITests {
    @Test func csrIsSignedByTheKey() throws {
        let key = P256.Signing.PrivateKey()
        let pem = try MusterPKI.makeCSR(key: key, commonName: "host-1")
        let csr = try PEM.certificateSigningRequest(from: pem)
        #expect(csr.publicKey == Certificate.PublicKey(key.publicKey))
        #expect(csr.publicKey.isValidSignature(csr.signature, for: csr))
        #expect(MusterPKI.commonName(of: csr.subject) == "host-1")
    }

    @Test func bootstrapCertificateIsSelfSignedAndMarked() throws {
        let key = P256.Signing.PrivateKey()
        let now = Date()
        let cert = try MusterPKI.makeBootstrapCertificate(key: key, hostname: "h", now: now)
        #expect(MusterPKI.isBootstrapSubject(cert.subject))
        #expect(MusterPKI.isValidBootstrapCertificate(cert, now: now))
        #expect(!MusterPKI.isValidBootstrapCertificate(cert, now: now.addingTimeInterval(2 * 3600)))
        // A bootstrap-looking certificate signed by another key is not valid.
        let other = P256.Signing.PrivateKey()
        let forged = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-60),
            notValidAfter: now.addingTimeInterval(60), issuer: cert.subject, subject: cert.subject,
            signatureAlgorithm: .ecdsaWithSHA256, extensions: .init(), issuerPrivateKey: .init(other))
        #expect(!MusterPKI.isValidBootstrapCertificate(forged, now: now))
    }

    @Test func pemRoundTripOfSeveralCertificates() throws {
        let a = try MusterPKI.makeBootstrapCertificate(key: .init(), hostname: "a")
        let b = try MusterPKI.makeBootstrapCertificate(key: .init(), hostname: "b")
        let text = try PEM.encode(a) + PEM.encode(b)
        #expect(try PEM.certificates(from: text) == [a, b])
        #expect { try PEM.certificates(from: "nothing here") } throws: { ($0 as? MusterError)?.code == .invalidInput }
    }

    @Test func secureFileWritesAtomicallyWithMode() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-sf-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SecureFile.makeDirectory(dir, mode: 0o700)
        try SecureFile.write("one", to: "\(dir)/k", mode: 0o600)
        try SecureFile.write("two", to: "\(dir)/k", mode: 0o600)
        #expect(try SecureFile.read("\(dir)/k") == "two")
        #expect(SecureFile.mode(of: "\(dir)/k") == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["k"])
    }
}
