import Crypto
import Foundation

/// A built module on disk, as `muster module build` writes it: `descriptor.json`, `meta.erofs` and `objects/`.
///
/// ``verify(trustedKeys:)`` is the whole check a consumer (publish, a node before mounting) needs: signature,
/// image digest and every object's content.
public struct ModuleBundle: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public var descriptorPath: String { "\(directory)/descriptor.json" }
    public var imagePath: String { "\(directory)/meta.erofs" }
    public var objects: ObjectDirectory { ObjectDirectory(path: "\(directory)/objects") }

    /// Reads `descriptor.json` (not verified).
    ///
    /// - Throws: `MusterError` `.notFound` when it is missing, `.invalidInput` when it is not a descriptor.
    public func loadDescriptor() throws -> ModuleDescriptor {
        guard let data = FileManager.default.contents(atPath: descriptorPath) else {
            throw MusterError(
                .notFound, "\(descriptorPath) does not exist",
                hint: "pass the output directory of `muster module build`")
        }
        return try ModuleDescriptor.decode(data, source: descriptorPath)
    }

    /// Verifies the descriptor's signature, that `meta.erofs` is the signed image and that every object is
    /// present with the signed content.
    ///
    /// - Throws: `MusterError` `.verificationFailed` (signature, key), `.digestMismatch` (image or object
    ///   changed), `.notFound` (missing file or object), `.invalidInput` (not a descriptor or invalid manifest).
    public func verify(trustedKeys: [Curve25519.Signing.PublicKey]) throws -> ModuleDescriptor.Payload {
        let payload = try loadDescriptor().verify(trustedKeys: trustedKeys)
        guard let (digest, size) = try ContentDigest.sha256(ofFileAt: imagePath) else {
            throw MusterError(.notFound, "\(imagePath) does not exist")
        }
        guard digest == payload.image.digest, size == payload.image.size else {
            throw MusterError(
                .digestMismatch,
                "\(imagePath) is not the signed image (sha256 \(digest), \(size) bytes; signed "
                    + "\(payload.image.digest), \(payload.image.size) bytes)",
                hint: "rebuild the module")
        }
        try objects.verifyOrThrow(payload.objects)
        return payload
    }
}
