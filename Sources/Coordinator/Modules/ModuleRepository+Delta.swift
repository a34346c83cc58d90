import Foundation
import NIOCore
import Shared

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Deltas for nodes that hold an earlier version (protocol v3)

extension ModuleRepository {
    /// The largest image or descriptor a delta is computed for (both sides are read into memory).
    static let maximumDeltaInput: UInt64 = 256 << 20

    public var deltasDirectory: String { "\(root)/deltas" }

    /// The cache file of the delta from `base` to `digest` (both image digests, checked by the caller).
    func deltaPath(_ kind: TransferKind, digest: String, base: String) -> String {
        "\(deltasDirectory)/\(digest)-\(base).\(kind == .imageDelta ? "image" : "descriptor")"
    }

    /// Reads up to `length` bytes from `offset` of the ``BinaryDelta`` that turns the image (``TransferKind/imageDelta``)
    /// or descriptor (``TransferKind/descriptorDelta``) of image `base` into that of image `digest`.
    ///
    /// The delta is computed once, off the cooperative pool, and cached under `deltas/` (written through
    /// ``ContentWriter``, so a cached name only ever holds a complete delta); the agent's ranged requests and
    /// later nodes read the cached file.
    ///
    /// - Returns: The bytes (empty at or past the end) and the delta's total size.
    /// - Throws: `MusterError` `.notFound` when either version's file is not stored, `.invalidInput` for a kind
    ///   that is not a delta, a missing or bad base, a base equal to the target, files above
    ///   ``maximumDeltaInput`` or an offset past the end; `.io`.
    public func readDelta(
        _ kind: TransferKind, digest: String, base: String?, offset: UInt64, length: Int, allocator: ByteBufferAllocator
    ) async throws -> (data: ByteBuffer, totalSize: UInt64) {
        guard kind.isDelta else {
            throw MusterError(.invalidInput, "\(kind.rawValue) is not a delta kind")
        }
        guard let base, ObjectDirectory.isDigest(base), ObjectDirectory.isDigest(digest) else {
            throw MusterError(.invalidInput, "a \(kind.rawValue) request needs a target and a base image digest")
        }
        guard base != digest else {
            throw MusterError(.invalidInput, "a \(kind.rawValue) of image \(digest) against itself")
        }
        let path = deltaPath(kind, digest: digest, base: base)
        let delta: Data
        if let cached = FileManager.default.contents(atPath: path) {
            delta = cached
        } else {
            delta = try await runBlocking { try makeDelta(kind, digest: digest, base: base, at: path) }
        }
        guard offset <= UInt64(delta.count) else {
            throw MusterError(
                .invalidInput, "offset \(offset) is past the end of the \(kind.rawValue) (\(delta.count) bytes)")
        }
        let start = Int(offset)
        let end = start + min(max(0, length), delta.count - start)
        var buffer = allocator.buffer(capacity: end - start)
        buffer.writeBytes(delta[start..<end])
        return (buffer, UInt64(delta.count))
    }

    /// Computes the delta and stores it at `path`.
    private func makeDelta(_ kind: TransferKind, digest: String, base: String, at path: String) throws -> Data {
        let fileKind: TransferKind = kind == .imageDelta ? .image : .descriptor
        let baseBytes = try wholeFile(fileKind, digest: base)
        let targetBytes = try wholeFile(fileKind, digest: digest)
        let delta = BinaryDelta.make(base: baseBytes, target: targetBytes)
        do {
            try FileManager.default.createDirectory(atPath: deltasDirectory, withIntermediateDirectories: true)
        } catch {
            throw MusterError(.io, "cannot create \(deltasDirectory): \(error)")
        }
        // Unique temporary name: two connections may compute the same delta at once; both results are equal.
        let writer = try ContentWriter(
            temporaryPath: "\(deltasDirectory)/.tmp-\(digest.prefix(16))-\(UUID().uuidString.prefix(8))", resume: false)
        do {
            try delta.withUnsafeBytes { try writer.write($0) }
            try writer.commit(expectedDigest: nil, to: path)
        } catch {
            writer.discard()
            throw error
        }
        return Data(delta)
    }

    /// A stored image or descriptor, whole.
    private func wholeFile(_ kind: TransferKind, digest: String) throws -> [UInt8] {
        guard let size = try size(of: kind, digest: digest) else {
            let what = kind == .image ? "image \(digest)" : "descriptor of image \(digest)"
            throw MusterError(.notFound, "the coordinator does not hold \(what)")
        }
        guard size <= Self.maximumDeltaInput else {
            throw MusterError(
                .invalidInput, "\(kind.rawValue) \(digest) is \(size) bytes, too large for a delta; fetch it whole")
        }
        let path = try self.path(of: kind, digest: digest)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MusterError(.io, "cannot read \(path)")
        }
        return [UInt8](data)
    }
}
