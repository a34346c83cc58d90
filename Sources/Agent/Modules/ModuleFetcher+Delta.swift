import Foundation
import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Deltas against a version the node already holds (protocol v3)

extension ModuleFetcher {
    /// An earlier version of the same module in the node's store: deltas are asked for against it.
    struct DeltaBase: Sendable {
        var imageDigest: String
        var version: String
    }

    /// The newest other version of `module` whose descriptor and image are both in the store (a descriptor in
    /// the store means its image is there too; both are checked).
    func deltaBase(module: String, excluding imageDigest: String) -> DeltaBase? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: layout.descriptorsDirectory) else {
            return nil
        }
        var best: DeltaBase?
        for name in names where name.hasSuffix(".json") {
            let digest = String(name.dropLast(".json".count))
            guard digest != imageDigest, ObjectDirectory.isDigest(digest),
                FileStatus.lstat(layout.imagePath(digest))?.kind == .regular,
                let data = FileManager.default.contents(atPath: layout.descriptorPath(digest)),
                let payload = try? ModuleDescriptor.decode(data, source: name).payload,
                payload.manifest.name == module, payload.image.digest == digest
            else { continue }
            let version = payload.manifest.version
            if let current = best, current.version.compare(version, options: .numeric) != .orderedAscending {
                continue
            }
            best = DeltaBase(imageDigest: digest, version: version)
        }
        return best
    }

    /// Whether the current session can serve deltas (protocol v3).
    var sessionServesDeltas: Bool {
        (transport.sessionVersion ?? .v1) >= .v3
    }

    /// The descriptor of `imageDigest` rebuilt from a delta against `base`'s descriptor and verified like a
    /// fetched one, or `nil` (logged) when that fails for any reason: the caller then fetches it whole.
    ///
    /// - Returns: The descriptor JSON, its verified payload and the delta's size.
    /// - Throws: Only `CONNECTION_FAILED` (the caller resumes with the next session) and cancellation.
    func descriptorByDelta(imageDigest: String, base: DeltaBase) async throws -> (
        data: Data, payload: ModuleDescriptor.Payload, deltaBytes: UInt64
    )? {
        guard sessionServesDeltas else { return nil }
        do {
            let delta = try await fetchInMemory(
                .descriptorDelta, digest: imageDigest, base: base.imageDigest, maximumSize: Self.maximumDescriptor,
                oversize: .invalidInput)
            guard let baseData = FileManager.default.contents(atPath: layout.descriptorPath(base.imageDigest)) else {
                throw MusterError(.notFound, "the base descriptor \(base.imageDigest) disappeared from the store")
            }
            let rebuilt = Data(
                try BinaryDelta.apply(delta, base: [UInt8](baseData), maximumTargetLength: Self.maximumDescriptor))
            let payload = try verifiedPayload(rebuilt, imageDigest: imageDigest)
            return (rebuilt, payload, UInt64(delta.count))
        } catch {
            try rethrowIfInterrupted(error)
            logger.notice(
                "descriptor delta failed; fetching the whole descriptor",
                metadata: ["image": "\(imageDigest)", "base": "\(base.imageDigest)", "reason": "\(error)"])
            return nil
        }
    }

    /// Stores the image `imageDigest` rebuilt from a delta against `base`'s image; returns the delta's size, or
    /// `nil` (logged, nothing stored) when that fails for any reason: the caller then fetches the image whole.
    ///
    /// - Throws: Only `CONNECTION_FAILED` (the caller resumes with the next session) and cancellation.
    func imageByDelta(imageDigest: String, size: UInt64, base: DeltaBase) async throws -> UInt64? {
        guard sessionServesDeltas else { return nil }
        do {
            // A delta is worth it only when it is clearly smaller than the image.
            let limit = Int(min(size, UInt64(Int.max / 2)))
            let delta = try await fetchInMemory(
                .imageDelta, digest: imageDigest, base: base.imageDigest, maximumSize: limit, oversize: .invalidInput)
            let basePath = layout.imagePath(base.imageDigest)
            guard let baseData = FileManager.default.contents(atPath: basePath) else {
                throw MusterError(.notFound, "the base image \(base.imageDigest) disappeared from the store")
            }
            let rebuilt = try BinaryDelta.apply(delta, base: [UInt8](baseData), maximumTargetLength: limit)
            // The delta's own sha256 was checked; the signed image digest and size are what count.
            let writer = try ContentWriter(
                temporaryPath: "\(layout.partialDirectory)/imagedelta-\(imageDigest)", resume: false)
            do {
                try rebuilt.withUnsafeBytes { try writer.write($0) }
                try writer.commit(expectedDigest: imageDigest, expectedSize: size, to: layout.imagePath(imageDigest))
            } catch {
                writer.discard()
                throw error
            }
            return UInt64(delta.count)
        } catch {
            try rethrowIfInterrupted(error)
            logger.notice(
                "image delta failed; fetching the whole image",
                metadata: ["image": "\(imageDigest)", "base": "\(base.imageDigest)", "reason": "\(error)"])
            return nil
        }
    }

    /// The largest descriptor accepted (as for a whole descriptor).
    static var maximumDescriptor: Int { 16 << 20 }

    /// Decodes and verifies a descriptor with the cluster's keys; its image must be `imageDigest`.
    func verifiedPayload(_ data: Data, imageDigest: String) throws -> ModuleDescriptor.Payload {
        let descriptor = try ModuleDescriptor.decode(data, source: "the descriptor of image \(imageDigest)")
        let payload = try descriptor.verify(trustedKeys: try trustedKeys())
        guard payload.image.digest == imageDigest else {
            throw MusterError(
                .verificationFailed,
                "the descriptor sent for image \(imageDigest) describes image \(payload.image.digest)")
        }
        return payload
    }

    private func rethrowIfInterrupted(_ error: any Error) throws {
        if error is CancellationError { throw error }
        if let error = error as? MusterError, error.code == .connectionFailed || error.code == .cancelled {
            throw error
        }
    }
}
