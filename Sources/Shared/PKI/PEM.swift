import Crypto
import Foundation
import SwiftASN1
import X509

/// PEM and DER helpers for certificates, requests and keys.
public enum PEM {
    /// Serializes a certificate as PEM text (one block, trailing newline).
    public static func encode(_ certificate: Certificate) throws -> String {
        try certificate.serializeAsPEM().pemString + "\n"
    }

    /// Serializes a certificate as DER.
    public static func der(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    /// Serializes a certificate signing request as PEM text.
    public static func encode(_ request: CertificateSigningRequest) throws -> String {
        try request.serializeAsPEM().pemString + "\n"
    }

    /// Parses every `CERTIFICATE` block in `text`, in order.
    ///
    /// - Throws: `MusterError` `.invalidInput` when there is none or one does not parse.
    public static func certificates(from text: String) throws -> [Certificate] {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: text)
        } catch {
            throw MusterError(.invalidInput, "not PEM certificate text", cause: UnderlyingError(error))
        }
        let certs = try documents.filter { $0.discriminator == "CERTIFICATE" }.map { doc in
            do {
                return try Certificate(pemDocument: doc)
            } catch {
                throw MusterError(.invalidInput, "a PEM certificate does not parse", cause: UnderlyingError(error))
            }
        }
        guard !certs.isEmpty else { throw MusterError(.invalidInput, "no CERTIFICATE block in the PEM text") }
        return certs
    }

    /// Parses the first certificate in `text`.
    public static func certificate(from text: String) throws -> Certificate {
        let all = try certificates(from: text)
        return all[0]
    }

    /// Parses a PKCS#10 certificate signing request.
    public static func certificateSigningRequest(from text: String) throws -> CertificateSigningRequest {
        do {
            return try CertificateSigningRequest(pemEncoded: text)
        } catch {
            throw MusterError(
                .invalidInput, "the certificate signing request is not valid PEM", cause: UnderlyingError(error))
        }
    }

    /// Parses a P-256 private key in PEM (PKCS#8 or SEC1).
    public static func p256PrivateKey(from text: String) throws -> P256.Signing.PrivateKey {
        do {
            return try P256.Signing.PrivateKey(pemRepresentation: text)
        } catch {
            throw MusterError(.invalidInput, "not a P-256 private key in PEM", cause: UnderlyingError(error))
        }
    }
}

extension CAPin {
    /// Pins the SubjectPublicKeyInfo of a CA certificate.
    public init(certificate: Certificate) {
        self.init(spkiDER: Array(certificate.publicKey.subjectPublicKeyInfoBytes))
    }
}
