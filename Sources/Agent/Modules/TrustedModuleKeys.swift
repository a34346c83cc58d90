import Crypto
import Foundation
import Shared

/// The Ed25519 public keys whose module signatures a node trusts, read from PEM files
/// (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo as `openssl pkey -pubout` writes it).
enum TrustedModuleKeys {
    /// `SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) … }` before the 32 key bytes.
    private static let prefix: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]

    /// The default key file: `<state-dir>/pki/module-signing.pub`.
    static func defaultPath(stateDirectory: String) -> String { "\(stateDirectory)/pki/module-signing.pub" }

    /// Reads every key of `paths`.
    /// - Throws: `MusterError` `.notFound` (a missing file), `.invalidInput` (not an Ed25519 public key PEM).
    static func load(_ paths: [String]) throws -> [Curve25519.Signing.PublicKey] {
        try paths.map { path in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw MusterError(.notFound, "module signing key \(path) does not exist")
            }
            return try parse(String(decoding: data, as: UTF8.self), source: path)
        }
    }

    /// One public key from PEM text.
    static func parse(_ pem: String, source: String) throws -> Curve25519.Signing.PublicKey {
        let lines = pem.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        guard lines.first == "-----BEGIN PUBLIC KEY-----", lines.last == "-----END PUBLIC KEY-----",
            let der = Data(base64Encoded: lines.dropFirst().dropLast().joined()),
            der.count == prefix.count + 32, Array(der.prefix(prefix.count)) == prefix,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: der.suffix(32))
        else {
            throw MusterError(
                .invalidInput, "\(source) is not an Ed25519 public key in PEM (BEGIN PUBLIC KEY)",
                hint: "write it with `openssl pkey -in module-signing.key -pubout`")
        }
        return key
    }

    /// PEM text of `key` (for tests and for writing the default key file).
    static func pem(_ key: Curve25519.Signing.PublicKey) -> String {
        let base64 = Data(prefix + Array(key.rawRepresentation)).base64EncodedString()
        return "-----BEGIN PUBLIC KEY-----\n\(base64)\n-----END PUBLIC KEY-----\n"
    }
}
