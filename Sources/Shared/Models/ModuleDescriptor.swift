import Crypto
import Foundation

/// The signed description of one built module version (DESIGN §5): its manifest, the digest of its EROFS
/// metadata image and every object the image points at, signed with the cluster's Ed25519 module key.
///
/// On disk (`descriptor.json` next to `meta.erofs` and `objects/`) and on the wire it is
/// `{"payload": {...}, "signature": {"algorithm": "ed25519", "keyID": "…", "value": "<base64>"}}`. The
/// signature covers ``Payload/canonicalBytes()`` (``CanonicalJSON``), never the file's own formatting, so
/// re-indenting the file does not break it and changing any field does.
public struct ModuleDescriptor: Codable, Sendable, Equatable {
    /// The payload format this code writes and accepts.
    public static let formatVersion = 1
    /// The only signature algorithm.
    public static let signatureAlgorithm = "ed25519"

    /// One content-addressed object: a file's sha256 (lowercase hex) and size.
    public struct Object: Codable, Sendable, Hashable, Comparable {
        public var digest: String
        public var size: UInt64

        public init(digest: String, size: UInt64) {
            self.digest = digest
            self.size = size
        }

        public static func < (lhs: Object, rhs: Object) -> Bool { lhs.digest < rhs.digest }
    }

    /// The EROFS metadata image: sha256 (lowercase hex) of `meta.erofs` and its size.
    public struct Image: Codable, Sendable, Equatable {
        public var digest: String
        public var size: UInt64

        public init(digest: String, size: UInt64) {
            self.digest = digest
            self.size = size
        }
    }

    /// What is signed.
    public struct Payload: Codable, Sendable, Equatable {
        public var formatVersion: Int
        public var manifest: ModuleManifest
        public var image: Image
        /// Sorted by digest, each digest once.
        public var objects: [Object]

        public init(manifest: ModuleManifest, image: Image, objects: [Object]) {
            self.formatVersion = ModuleDescriptor.formatVersion
            self.manifest = manifest
            self.image = image
            self.objects = Array(Set(objects)).sorted()
        }

        /// The bytes the signature covers.
        public func canonicalBytes() throws -> [UInt8] { try CanonicalJSON.encode(self) }

        /// Sum of all object sizes (what a node without any of them must fetch, besides the image).
        public var totalObjectBytes: UInt64 { objects.reduce(0) { $0 + $1.size } }
    }

    public struct Signature: Codable, Sendable, Equatable {
        public var algorithm: String
        /// ``ModuleDescriptor/keyID(of:)`` of the signing key.
        public var keyID: String
        /// Base64 of the 64-byte Ed25519 signature.
        public var value: String

        public init(algorithm: String = ModuleDescriptor.signatureAlgorithm, keyID: String, value: String) {
            self.algorithm = algorithm
            self.keyID = keyID
            self.value = value
        }
    }

    public var payload: Payload
    public var signature: Signature

    public init(payload: Payload, signature: Signature) {
        self.payload = payload
        self.signature = signature
    }

    /// The key id: lowercase hex sha256 of the 32-byte raw public key.
    public static func keyID(of key: Curve25519.Signing.PublicKey) -> String {
        ContentDigest.hex(SHA256.hash(data: key.rawRepresentation))
    }

    /// Signs `payload` (Ed25519 is deterministic: the same payload and key give the same descriptor).
    ///
    /// - Throws: `MusterError` `.internal` if signing fails.
    public static func sign(_ payload: Payload, with key: Curve25519.Signing.PrivateKey) throws -> ModuleDescriptor {
        let bytes = try payload.canonicalBytes()
        let signature: Data
        do {
            signature = try key.signature(for: bytes)
        } catch {
            throw MusterError(.internal, "cannot sign the module descriptor", cause: UnderlyingError(error))
        }
        return ModuleDescriptor(
            payload: payload,
            signature: Signature(keyID: keyID(of: key.publicKey), value: signature.base64EncodedString()))
    }

    // MARK: - Verification

    /// Checks the signature against the trusted keys and the payload's own consistency, then returns it.
    ///
    /// Also re-validates the manifest (without a file tree), so a node never writes units from a manifest that
    /// the builder's rules would reject, whoever signed it.
    ///
    /// - Parameter trustedKeys: The cluster's module signing public keys.
    /// - Throws: `MusterError` `.verificationFailed` for an unknown key, a bad signature or a malformed payload.
    public func verify(trustedKeys: [Curve25519.Signing.PublicKey]) throws -> Payload {
        guard signature.algorithm == Self.signatureAlgorithm else {
            throw MusterError(.verificationFailed, "unsupported signature algorithm \"\(signature.algorithm)\"")
        }
        guard let key = trustedKeys.first(where: { Self.keyID(of: $0) == signature.keyID }) else {
            throw MusterError(
                .verificationFailed,
                "module \(payload.manifest.name)@\(payload.manifest.version) is signed by unknown key \(signature.keyID)",
                hint:
                    "only modules signed with this cluster's module key (<state-dir>/pki/module-signing.key) are accepted"
            )
        }
        guard let signatureBytes = Data(base64Encoded: signature.value), signatureBytes.count == 64 else {
            throw MusterError(.verificationFailed, "the descriptor's signature is not a base64 Ed25519 signature")
        }
        guard key.isValidSignature(signatureBytes, for: try payload.canonicalBytes()) else {
            throw MusterError(
                .verificationFailed,
                "signature of module \(payload.manifest.name)@\(payload.manifest.version) does not match its content",
                hint: "the descriptor was changed after signing; rebuild and republish the module")
        }
        try checkConsistency()
        return payload
    }

    /// Format version, digests, object order and the manifest rules (signed but nonsensical stays refused).
    private func checkConsistency() throws {
        guard payload.formatVersion == Self.formatVersion else {
            throw MusterError(.verificationFailed, "unsupported descriptor format version \(payload.formatVersion)")
        }
        guard ObjectDirectory.isDigest(payload.image.digest) else {
            throw MusterError(.verificationFailed, "image digest \"\(payload.image.digest)\" is not a sha256")
        }
        for (index, object) in payload.objects.enumerated() {
            guard ObjectDirectory.isDigest(object.digest) else {
                throw MusterError(.verificationFailed, "objects[\(index)] \"\(object.digest)\" is not a sha256")
            }
            if index > 0, payload.objects[index - 1].digest >= object.digest {
                throw MusterError(.verificationFailed, "objects are not sorted and unique at objects[\(index)]")
            }
        }
        let issues = payload.manifest.validate(file: "descriptor.json#payload.manifest")
        if !issues.isEmpty { throw ModuleManifest.ValidationError(issues: issues).musterError }
    }

    // MARK: - Files

    /// The descriptor as written to `descriptor.json`: indented, sorted keys (stable across builds).
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            return try encoder.encode(self)
        } catch {
            throw MusterError(.internal, "cannot encode the module descriptor", cause: UnderlyingError(error))
        }
    }

    /// Reads a descriptor (not yet verified; call ``verify(trustedKeys:)``).
    ///
    /// - Throws: `MusterError` `.invalidInput` naming `source` when the JSON is not a descriptor.
    public static func decode(_ data: Data, source: String) throws -> ModuleDescriptor {
        do {
            return try JSONDecoder().decode(ModuleDescriptor.self, from: data)
        } catch {
            throw MusterError(
                .invalidInput, "\(source) is not a module descriptor: \(error)", cause: UnderlyingError(error))
        }
    }
}
