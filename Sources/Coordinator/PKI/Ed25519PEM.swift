import Crypto
import Foundation
import Shared

/// PKCS#8 PEM for Ed25519 private keys (RFC 8410), written by hand because swift-crypto keeps Ed25519 PEM in
/// `_CryptoExtras`, which is not one of our dependencies; the encoding is a fixed 16-byte prefix + the seed.
enum Ed25519PEM {
    /// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }`
    private static let prefix: [UInt8] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]

    static func encode(_ key: Curve25519.Signing.PrivateKey) -> String {
        let der = prefix + Array(key.rawRepresentation)
        let base64 = Data(der).base64EncodedString()
        return "-----BEGIN PRIVATE KEY-----\n\(base64)\n-----END PRIVATE KEY-----\n"
    }

    static func privateKey(from pem: String, path: String) throws -> Curve25519.Signing.PrivateKey {
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        guard let der = Data(base64Encoded: body), der.count == prefix.count + 32,
            Array(der.prefix(prefix.count)) == prefix
        else {
            throw MusterError(.invalidInput, "\(path) is not an Ed25519 private key in PKCS#8 PEM")
        }
        do {
            return try Curve25519.Signing.PrivateKey(rawRepresentation: der.suffix(32))
        } catch {
            throw MusterError(.invalidInput, "\(path) holds an invalid Ed25519 key", cause: UnderlyingError(error))
        }
    }
}
