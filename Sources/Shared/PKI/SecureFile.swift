import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Atomic writes of small files (keys, certificates, identity) with an explicit mode.
public enum SecureFile {
    /// Writes `contents` to `path` atomically: a temporary file in the same directory created with `mode`,
    /// fsynced, then renamed over `path`. A reader sees the old or the new file, never half of one, and a key
    /// is never readable by others, not even for a moment.
    ///
    /// - Throws: `MusterError` `.io` naming the path.
    public static func write(_ contents: String, to path: String, mode: mode_t) throws {
        try write(Array(contents.utf8), to: path, mode: mode)
    }

    /// Writes `bytes` to `path` atomically (see ``write(_:to:mode:)-(String,_,_)``), optionally giving the file an
    /// owner (to keep a rewritten file's owner), and fsyncs the directory so the rename survives a crash.
    /// `durable: false` skips both fsyncs, for files a crash may lose or leave older without harm (a cache that
    /// describes a real past state): still atomic for readers, without waiting for the disk.
    public static func write(
        _ bytes: [UInt8], to path: String, mode: mode_t, owner: (uid_t, gid_t)? = nil, durable: Bool = true
    ) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temp =
            "\(directory.isEmpty ? "." : directory)/.\((path as NSString).lastPathComponent).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ioError("create", temp) }
        var ok = true
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress.map { $0 + offset }, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    ok = false
                    return
                }
                offset += n
            }
        }
        // The umask may have narrowed the mode at creation; set it exactly.
        if ok, fchmod(fd, mode) != 0 { ok = false }
        if ok, let owner, fchown(fd, owner.0, owner.1) != 0 { ok = false }
        if ok, durable, fsync(fd) != 0 { ok = false }
        let savedErrno = errno
        close(fd)
        guard ok else {
            unlink(temp)
            errno = savedErrno
            throw ioError("write", temp)
        }
        guard rename(temp, path) == 0 else {
            let error = ioError("rename into place", path)
            unlink(temp)
            throw error
        }
        guard durable else { return }
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
    }

    /// Reads a whole file as UTF-8 text.
    public static func read(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MusterError(.io, "cannot read \(path)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Creates a directory (and parents) with `mode` if it does not exist.
    public static func makeDirectory(_ path: String, mode: mode_t) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw MusterError(.io, "\(path) exists and is not a directory") }
            return
        }
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: Int(mode)])
        } catch {
            throw MusterError(.io, "cannot create directory \(path)", cause: UnderlyingError(error))
        }
    }

    /// The permission bits of a file, or `nil` when it does not exist.
    public static func mode(of path: String) -> mode_t? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let mode = attributes[.posixPermissions] as? Int
        else { return nil }
        return mode_t(mode & 0o7777)
    }

    private static func ioError(_ what: String, _ path: String) -> MusterError {
        MusterError(.io, "cannot \(what) \(path): \(String(cString: strerror(errno)))")
    }
}
