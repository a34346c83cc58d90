import Crypto
import Foundation
import Shared

/// The cluster's Ed25519 module public key on a node: `<state-dir>/identity/module-key.pub`, base64 of the raw
/// key (``ModulePublicKey``). The coordinator sends it in the join response and in every `welcome`; the agent
/// verifies every module descriptor against it before it stores or attaches anything.
public enum ModuleKeyFile {
    public static func path(stateDirectory: String) -> String {
        "\(NodeIdentity.Paths(stateDirectory: stateDirectory).directory)/module-key.pub"
    }

    /// Stores the key (atomically, 0644) unless the same key is already stored.
    ///
    /// - Returns: Whether the file changed.
    /// - Throws: `MusterError` `.invalidInput` for a malformed key, `.io`.
    @discardableResult
    public static func store(_ encoded: String, stateDirectory: String) throws -> Bool {
        let key = try ModulePublicKey.decode(encoded)
        let path = path(stateDirectory: stateDirectory)
        if let existing = try? load(stateDirectory: stateDirectory), existing.rawRepresentation == key.rawRepresentation {
            return false
        }
        try SecureFile.write(ModulePublicKey.encode(key) + "\n", to: path, mode: 0o644)
        return true
    }

    /// The stored key.
    ///
    /// - Throws: `MusterError` `.notFound` when the coordinator has not sent it yet, `.invalidInput`.
    public static func load(stateDirectory: String) throws -> Curve25519.Signing.PublicKey {
        let path = path(stateDirectory: stateDirectory)
        guard FileManager.default.fileExists(atPath: path) else {
            throw MusterError(
                .notFound, "this node has no module key yet (\(path))",
                hint: "the coordinator sends it when the agent connects; update the coordinator if it does not")
        }
        do {
            return try ModulePublicKey.decode(try SecureFile.read(path))
        } catch let error as MusterError {
            throw MusterError(.invalidInput, "\(path): \(error.message)")
        }
    }
}
