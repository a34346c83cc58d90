import Crypto
import Foundation

/// The cluster's Ed25519 module public key as it travels (join response, welcome) and is stored on a node
/// (`<state-dir>/identity/module-key.pub`): base64 of the 32 raw key bytes, one line.
public enum ModulePublicKey {
    /// Base64 of the raw key.
    public static func encode(_ key: Curve25519.Signing.PublicKey) -> String {
        key.rawRepresentation.base64EncodedString()
    }

    /// Parses the base64 form.
    ///
    /// - Throws: `MusterError` `.invalidInput` when it is not a base64 Ed25519 public key.
    public static func decode(_ text: String) throws -> Curve25519.Signing.PublicKey {
        guard let raw = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)), raw.count == 32,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
        else {
            throw MusterError(.invalidInput, "not a base64 Ed25519 module public key")
        }
        return key
    }
}
