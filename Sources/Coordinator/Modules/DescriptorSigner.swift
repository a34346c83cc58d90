import Crypto
import Foundation
import Shared

/// Signs module descriptors with the cluster's Ed25519 module signing key.
///
/// The key is the one ``CertificateAuthority`` creates as `<state-dir>/pki/module-signing.key` (PKCS#8 PEM,
/// mode 0600); building never creates one, so a module can only be signed by a key the coordinator trusts.
struct DescriptorSigner: Sendable {
    let key: Curve25519.Signing.PrivateKey

    init(key: Curve25519.Signing.PrivateKey) { self.key = key }

    /// The public half, what verifiers trust.
    var publicKey: Curve25519.Signing.PublicKey { key.publicKey }

    /// ``ModuleDescriptor/keyID(of:)`` of the key.
    var keyID: String { ModuleDescriptor.keyID(of: key.publicKey) }

    /// Loads the key from a PEM file.
    ///
    /// - Throws: `MusterError` `.notFound` (with a hint) when the file is missing, `.invalidInput` when it is not
    ///   an Ed25519 PKCS#8 key.
    static func load(keyFile path: String) throws -> DescriptorSigner {
        guard FileManager.default.fileExists(atPath: path) else {
            throw MusterError(
                .notFound, "module signing key \(path) does not exist",
                hint: "start the coordinator once with this --state-dir (it creates pki/module-signing.key), "
                    + "or pass --key PATH")
        }
        return DescriptorSigner(key: try Ed25519PEM.privateKey(from: try SecureFile.read(path), path: path))
    }

    /// Loads `<stateDirectory>/pki/module-signing.key`.
    static func load(stateDirectory: String) throws -> DescriptorSigner {
        try load(keyFile: CertificateAuthority.Paths(directory: "\(stateDirectory)/pki").moduleSigningKey)
    }

    func sign(_ payload: ModuleDescriptor.Payload) throws -> ModuleDescriptor {
        try ModuleDescriptor.sign(payload, with: key)
    }
}
