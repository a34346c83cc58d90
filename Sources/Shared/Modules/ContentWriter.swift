import CXattr
import Crypto
import Foundation
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Writes one content-addressed file (module object, image or descriptor) so that its final name only ever
/// holds the complete, verified content.
///
/// Bytes go to a temporary file (`temporaryPath`, on the same file system as the destination) while their
/// sha256 is computed; ``commit(expectedDigest:expectedSize:to:)`` checks the digest, `fsync`s, makes the file
/// read-only (0444) and renames it into place, then `fsync`s the directory. Nothing is ever written under the
/// final name, so a crash, a full disk or a wrong digest leaves no half-written object in a store.
///
/// With `resume`, an existing temporary file is kept: its bytes are hashed again and writing continues at its
/// end (``offset``), which is how an interrupted transfer picks up where it stopped.
public final class ContentWriter {
    public let temporaryPath: String
    /// Bytes in the temporary file so far (where the next write lands).
    public private(set) var offset: UInt64 = 0
    /// Bytes that were already there when a resumed writer opened the file.
    public let resumedBytes: UInt64
    private var hasher = SHA256()
    private var fd: Int32

    /// - Parameters:
    ///   - temporaryPath: The temporary file; its directory must exist.
    ///   - resume: Keep and continue an existing temporary file (otherwise it is truncated).
    /// - Throws: `MusterError` `.io`.
    public init(temporaryPath: String, resume: Bool) throws {
        self.temporaryPath = temporaryPath
        let flags = O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (resume ? 0 : O_TRUNC)
        let descriptor = open(temporaryPath, flags, 0o600)
        guard descriptor >= 0 else {
            throw MusterError(.io, "cannot create \(temporaryPath): \(String(cString: strerror(errno)))")
        }
        var existing: UInt64 = 0
        var hasher = SHA256()
        // Only a file that has bytes needs the read buffer (a fetch opens every new file with `resume`, and
        // zeroing a 1 MiB buffer per small file showed up in profiles).
        if resume, (FileStatus.fstat(descriptor)?.size ?? 1) > 0 {
            // Re-hash what an earlier attempt wrote, so the final digest covers the whole file.
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 {
                    if errno == EINTR { continue }
                    let reason = String(cString: strerror(errno))
                    close(descriptor)
                    throw MusterError(.io, "cannot read \(temporaryPath): \(reason)")
                }
                if count == 0 { break }
                buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
                existing += UInt64(count)
            }
        }
        self.fd = descriptor
        self.hasher = hasher
        self.offset = existing
        self.resumedBytes = existing
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    /// Appends bytes and hashes them.
    ///
    /// - Throws: `MusterError` `.io` (a full disk says so: "no space left on device").
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard fd >= 0 else { throw MusterError(.internal, "\(temporaryPath) was already committed or discarded") }
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        hasher.update(bufferPointer: bytes)
        var done = 0
        while done < bytes.count {
            let count = Glibc.write(fd, base + done, bytes.count - done)
            if count < 0 {
                if errno == EINTR { continue }
                throw Self.writeError(temporaryPath, errno: errno)
            }
            done += count
        }
        offset += UInt64(bytes.count)
    }

    /// Appends a buffer's readable bytes.
    public func write(_ buffer: ByteBuffer) throws {
        try buffer.withUnsafeReadableBytes { try write($0) }
    }

    /// Checks the content and moves it into place, read-only: ``seal(expectedDigest:expectedSize:)`` then
    /// ``Sealed/install(to:)``.
    ///
    /// - Parameters:
    ///   - expectedDigest: The sha256 the content must have (lowercase hex); `nil` for a file named by something
    ///     else (a descriptor is named by its image's digest and checked by its signature instead).
    ///   - expectedSize: The size it must have, when known.
    ///   - finalPath: The destination; its directory is created when missing.
    /// - Throws: `MusterError` `.digestMismatch` (the temporary file is deleted), `.io`.
    public func commit(expectedDigest: String?, expectedSize: UInt64? = nil, to finalPath: String) throws {
        try seal(expectedDigest: expectedDigest, expectedSize: expectedSize).install(to: finalPath)
    }

    /// Checks the content's digest and size and hands the open temporary file over for
    /// ``Sealed/install(to:)``, which may run on another thread (it `fsync`s, the slow part). The writer is done
    /// afterwards either way.
    ///
    /// - Throws: `MusterError` `.digestMismatch` (the temporary file is deleted), `.internal` when already done.
    public func seal(expectedDigest: String?, expectedSize: UInt64? = nil) throws -> Sealed {
        guard fd >= 0 else { throw MusterError(.internal, "\(temporaryPath) was already committed or discarded") }
        let digest = ContentDigest.hex(hasher.finalize())
        guard expectedDigest.map({ $0 == digest }) ?? true, expectedSize.map({ $0 == offset }) ?? true else {
            discard()
            throw MusterError(
                .digestMismatch,
                "content for \(expectedDigest ?? "this file") has sha256 \(digest) (\(offset) bytes"
                    + (expectedSize.map { "; expected \($0) bytes" } ?? "") + "): refused, nothing was stored",
                hint: "the source holds a damaged copy; publish the module again from an intact build")
        }
        let sealed = Sealed(fd: fd, temporaryPath: temporaryPath)
        fd = -1
        return sealed
    }

    /// Verified content in its temporary file, not yet durable or in place. Owns the open file: call
    /// ``install(to:)`` exactly once.
    public struct Sealed: Sendable {
        let fd: Int32
        public let temporaryPath: String

        /// `fsync`s the file, makes it read-only (0444), renames it to `finalPath` and `fsync`s the directory.
        /// Blocking: run it off the cooperative pool when it is not the only thing going on. On failure the
        /// temporary file is deleted.
        ///
        /// - Throws: `MusterError` `.io` (a full disk says so: "no space left on device").
        public func install(to finalPath: String) throws {
            if fsync(fd) != 0 {
                let error = ContentWriter.writeError(temporaryPath, errno: errno)
                close(fd)
                unlink(temporaryPath)
                throw error
            }
            try closeReadOnly()
            let directory = (finalPath as NSString).deletingLastPathComponent
            if mkdir(directory, 0o755) != 0, errno != EEXIST {
                let reason = String(cString: strerror(errno))
                unlink(temporaryPath)
                throw MusterError(.io, "cannot create \(directory): \(reason)")
            }
            guard rename(temporaryPath, finalPath) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(temporaryPath)
                throw MusterError(.io, "cannot move \(temporaryPath) to \(finalPath): \(reason)")
            }
            ContentWriter.syncDirectory(directory)
        }

        /// The batch form of ``install(to:)`` for many files made durable together by
        /// ``ContentWriter/installStaged(_:syncing:)``: starts writing the file's pages to disk without waiting
        /// for them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, so the disk works while the next files arrive),
        /// makes it read-only (0444) and closes it. It stays under its temporary name. Blocking (the writeback
        /// start can wait for a congested queue): run it off the cooperative pool.
        ///
        /// - Throws: `MusterError` `.io`; the temporary file is deleted.
        public func stage() throws -> Staged {
            // Only a hint: a failure here (a file system without the call) leaves the pages to the final syncfs.
            _ = muster_sync_file_range(fd, 0, 0, UInt32(MUSTER_SYNC_FILE_RANGE_WRITE))
            try closeReadOnly()
            return Staged(temporaryPath: temporaryPath)
        }

        /// Makes the file read-only (0444) and closes it; on failure deletes it.
        private func closeReadOnly() throws {
            if fchmod(fd, 0o444) != 0 {
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(temporaryPath)
                throw MusterError(.io, "cannot make \(temporaryPath) read-only: \(reason)")
            }
            close(fd)
        }
    }

    /// A verified, read-only file under its temporary name whose durability is left to
    /// ``ContentWriter/installStaged(_:syncing:)``.
    public struct Staged: Sendable {
        public let temporaryPath: String
    }

    /// Makes staged files durable and moves them into place, with two `syncfs` calls instead of an `fsync` of every
    /// file and directory (each of which flushes the disk's cache): `syncfs` of the file system holding
    /// `fileSystemPath` (the files' content reaches the disk), then every rename (fan-out directories created as
    /// needed), then `syncfs` again (the renames reach it). A name therefore only ever points to durable,
    /// verified content; a crash before the renames leaves complete temporary files, which a resumed transfer
    /// re-hashes and installs.
    ///
    /// - Throws: `MusterError` `.io` when the first `syncfs` reports a writeback error (the batch's temporary
    ///   files are deleted: their content may not be on disk) or a rename fails (that file is deleted; the
    ///   files before it are in place).
    public static func installStaged(_ files: [(staged: Staged, finalPath: String)], syncing fileSystemPath: String)
        throws
    {
        guard !files.isEmpty else { return }
        let fsFD = open(fileSystemPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fsFD >= 0 else {
            let reason = String(cString: strerror(errno))
            for file in files { unlink(file.staged.temporaryPath) }
            throw MusterError(.io, "cannot open \(fileSystemPath) to flush it: \(reason)")
        }
        defer { close(fsFD) }
        if muster_syncfs(fsFD) != 0 {
            let error = writeError(fileSystemPath, errno: errno)
            for file in files { unlink(file.staged.temporaryPath) }
            throw error
        }
        var created: Set<String> = []
        for (index, file) in files.enumerated() {
            let directory = (file.finalPath as NSString).deletingLastPathComponent
            if !created.contains(directory) {
                if mkdir(directory, 0o755) != 0, errno != EEXIST {
                    let reason = String(cString: strerror(errno))
                    for rest in files[index...] { unlink(rest.staged.temporaryPath) }
                    throw MusterError(.io, "cannot create \(directory): \(reason)")
                }
                created.insert(directory)
            }
            guard rename(file.staged.temporaryPath, file.finalPath) == 0 else {
                let reason = String(cString: strerror(errno))
                for rest in files[index...] { unlink(rest.staged.temporaryPath) }
                throw MusterError(.io, "cannot move \(file.staged.temporaryPath) to \(file.finalPath): \(reason)")
            }
        }
        // The renames are in place either way; an error here only means they may not survive a crash.
        _ = muster_syncfs(fsFD)
    }

    /// Closes and deletes the temporary file.
    public func discard() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        unlink(temporaryPath)
    }

    /// Closes the temporary file and keeps it (for a later resume).
    public func keepForResume() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    static func writeError(_ path: String, errno code: Int32) -> MusterError {
        if code == ENOSPC || code == EDQUOT {
            return MusterError(
                .io, "no space left on device while writing \(path)",
                hint: "free space in the state directory's file system and retry")
        }
        return MusterError(.io, "cannot write \(path): \(String(cString: strerror(code)))")
    }

    /// `fsync`s a directory so a rename in it survives a crash.
    public static func syncDirectory(_ path: String) {
        let dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { return }
        _ = fsync(dfd)
        close(dfd)
    }
}
