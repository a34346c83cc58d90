#if canImport(CoreFoundation)
    // MemberImportVisibility: glibc struct members (stat) may resolve through CoreFoundation.
    import CoreFoundation
#endif
import Foundation
import NIOCore
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// The published modules' files on the coordinator's disk, under `<state-dir>/modules`:
///
/// ```
/// objects/ab/cdef…                 ObjectDirectory layout, 0444, shared across modules and versions
/// images/<image digest>.erofs      0444
/// descriptors/<image digest>.json  the signed descriptor as published, 0444
/// tmp/                             uploads in progress (temp + fsync + rename, never read)
/// deltas/<image>-<base>.image|.descriptor   cached binary deltas for nodes holding an earlier version
/// ```
///
/// Every file is named by the sha256 of its content (descriptors by their image's digest) and is written
/// through ``ContentWriter``, so a name only ever holds complete, verified content. The agent's node store
/// uses the same layout (see `NodeModuleStore`).
public struct ModuleRepository: Sendable {
    public let root: String

    public init(stateDirectory: String) {
        root = "\(stateDirectory)/modules"
    }

    public var objects: ObjectDirectory { ObjectDirectory(path: "\(root)/objects") }
    public var temporaryDirectory: String { "\(root)/tmp" }

    public func imagePath(_ digest: String) -> String { "\(root)/images/\(digest).erofs" }
    public func descriptorPath(_ imageDigest: String) -> String { "\(root)/descriptors/\(imageDigest).json" }

    /// The path of a stored file, after checking that `digest` is a sha256 (never a path from input).
    ///
    /// - Throws: `MusterError` `.invalidInput`.
    public func path(of kind: TransferKind, digest: String) throws -> String {
        guard ObjectDirectory.isDigest(digest) else {
            throw MusterError(.invalidInput, "'\(digest)' is not a sha256 (64 lowercase hex digits)")
        }
        switch kind {
        case .object: return objects.path(of: digest)
        case .image: return imagePath(digest)
        case .descriptor: return descriptorPath(digest)
        case .imageDelta, .descriptorDelta:
            throw MusterError(.invalidInput, "a \(kind.rawValue) is named by two digests; see readDelta")
        }
    }

    /// Creates the directories.
    public func prepare() throws {
        for directory in ["\(root)/objects", "\(root)/images", "\(root)/descriptors", temporaryDirectory] {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw MusterError(.io, "cannot create \(directory): \(error)")
            }
        }
    }

    /// The size of a stored file, or `nil` when it is not stored.
    public func size(of kind: TransferKind, digest: String) throws -> UInt64? {
        let status = FileStatus.lstat(try path(of: kind, digest: digest))
        guard let status, status.kind == .regular else { return nil }
        return status.size
    }

    /// Stores an object or image streamed from `body` under its digest (uploads). A file already stored is left alone
    /// (the stream is drained and checked all the same, so a wrong upload is still refused).
    ///
    /// - Returns: Whether the file was new.
    /// - Throws: `MusterError` `.digestMismatch` when the bytes do not hash to `digest` (nothing is stored),
    ///   `.invalidInput` for a bad digest or more than `maximumSize` bytes, `.io`.
    public func store<Body: AsyncSequence>(
        _ kind: TransferKind, digest: String, body: Body, maximumSize: UInt64 = 64 << 30
    ) async throws -> Bool where Body.Element == ByteBuffer {
        guard kind != .descriptor else {
            throw MusterError(.invalidInput, "descriptors are published with POST /v1/modules, not uploaded")
        }
        let finalPath = try path(of: kind, digest: digest)
        try prepare()
        let existed = try size(of: kind, digest: digest) != nil
        let writer = try ContentWriter(
            temporaryPath: "\(temporaryDirectory)/\(kind.rawValue)-\(digest)-\(UUID().uuidString.prefix(8))",
            resume: false)
        do {
            for try await buffer in body {
                try writer.write(buffer)
                guard writer.offset <= maximumSize else {
                    throw MusterError(.invalidInput, "upload of \(digest) exceeds \(maximumSize) bytes")
                }
            }
            if existed {
                // Verify the upload anyway, then drop it: the stored copy is the same content.
                try writer.commit(expectedDigest: digest, to: "\(temporaryDirectory)/verified-\(digest)")
                unlink("\(temporaryDirectory)/verified-\(digest)")
                return false
            }
            try writer.commit(expectedDigest: digest, to: finalPath)
            return true
        } catch {
            writer.discard()
            if let error = error as? MusterError { throw error }
            throw MusterError(.io, "upload of \(digest) was interrupted: \(error)", cause: UnderlyingError(error))
        }
    }

    /// Stores a published descriptor under its image digest (unless one is stored already). The caller has
    /// verified its signature; the file is the descriptor's JSON exactly as published.
    public func storeDescriptor(_ data: Data, imageDigest: String) throws {
        let path = try path(of: .descriptor, digest: imageDigest)
        if FileStatus.lstat(path) != nil { return }
        try prepare()
        let writer = try ContentWriter(
            temporaryPath: "\(temporaryDirectory)/descriptor-\(imageDigest)-\(UUID().uuidString.prefix(8))",
            resume: false)
        do {
            try data.withUnsafeBytes { try writer.write($0) }
            try writer.commit(expectedDigest: nil, to: path)
        } catch {
            writer.discard()
            throw error
        }
    }

    /// Reads up to `length` bytes of a stored file from `offset`.
    ///
    /// - Returns: The bytes (empty at or past the end) and the file's total size.
    /// - Throws: `MusterError` `.notFound` when the file is not stored, `.invalidInput`, `.io`.
    public func read(
        _ kind: TransferKind, digest: String, offset: UInt64, length: Int, allocator: ByteBufferAllocator
    ) throws -> (data: ByteBuffer, totalSize: UInt64) {
        let filePath = try path(of: kind, digest: digest)
        let fd = open(filePath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT {
                let what =
                    switch kind {
                    case .object: "object \(digest)"
                    case .image: "image \(digest)"
                    case .descriptor: "descriptor of image \(digest)"
                    case .imageDelta, .descriptorDelta: "\(kind.rawValue) \(digest)"
                    }
                throw MusterError(
                    .notFound, "the coordinator does not hold \(what)",
                    hint: "publish the module again (muster module publish) to restore its files")
            }
            throw MusterError(.io, "cannot open \(filePath): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard let status = FileStatus.fstat(fd), status.kind == .regular else {
            throw MusterError(.io, "\(filePath) is not a regular file")
        }
        let total = status.size
        guard offset <= total else {
            throw MusterError(.invalidInput, "offset \(offset) is past the end of \(digest) (\(total) bytes)")
        }
        let count = Int(min(UInt64(max(0, length)), total - offset))
        var buffer = allocator.buffer(capacity: count)
        var done = 0
        while done < count {
            var failure: Int32 = 0
            let got = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - done) { pointer in
                let read = pread(fd, pointer.baseAddress, count - done, off_t(offset) + off_t(done))
                if read < 0 {
                    failure = errno
                    return 0
                }
                return read
            }
            if failure == EINTR { continue }
            if failure != 0 {
                throw MusterError(.io, "cannot read \(filePath): \(String(cString: strerror(failure)))")
            }
            if got == 0 { break }
            done += got
        }
        return (buffer, total)
    }
}
