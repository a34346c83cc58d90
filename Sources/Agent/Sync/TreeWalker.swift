#if canImport(Glibc)
    import Glibc
#endif

/// One entry below a walked root. Paths are raw bytes: names may hold newlines or bytes that are not UTF-8.
struct TreeEntry: Sendable, Equatable {
    enum Kind: String, Sendable, Equatable, Codable {
        case regular, directory, symlink, other
    }

    /// Relative to the root, components joined by `/`, no leading slash.
    var path: [UInt8]
    var kind: Kind
    /// `st_mode & 07777`.
    var permissions: UInt32
    var size: UInt64
    var userID: UInt32
    var groupID: UInt32
    var device: UInt64
    var inode: UInt64
    var linkCount: UInt64
    /// The target of a symlink, `nil` for other kinds.
    var symlinkTarget: [UInt8]?

    /// The path for messages: valid UTF-8 as is, other bytes as rsync prints them (`\#ooo`).
    var displayPath: String { TreeWalker.display(path) }
}

/// Walks a directory tree with `openat`/`fstatat` (never following symlinks), without Foundation so that
/// names are never re-encoded.
enum TreeWalker {
    /// A failure to read part of the tree.
    struct WalkError: Error, Sendable, CustomStringConvertible {
        var path: String
        var operation: String
        var errno: Int32
        var description: String { "\(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))" }
    }

    /// Visits every entry below `root` (not `root` itself), depth first, parents before children.
    ///
    /// - Parameters:
    ///   - sorted: visit each directory's entries in byte order (deterministic order for verification).
    ///   - strict: throw on unreadable directories and failed `fstatat`; otherwise skip them (the precheck:
    ///     rsync itself reports what it cannot read). Entries that vanish during the walk are skipped either way.
    ///   - excludes: entries it excludes are not visited, nor anything below them.
    /// - Throws: ``WalkError`` when `root` cannot be opened, or (strict) a part cannot be read; errors of `visit`.
    static func walk(
        root: String, sorted: Bool, strict: Bool, excludes: ExcludeMatcher = ExcludeMatcher([]),
        visit: (TreeEntry) throws -> Void
    ) throws {
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw WalkError(path: root, operation: "open", errno: errno) }
        try walkDirectory(
            fd: fd, prefix: [], root: root, sorted: sorted, strict: strict, excludes: excludes, visit: visit)
    }

    /// Takes ownership of `fd` (closed through `closedir`).
    private static func walkDirectory(
        fd: Int32, prefix: [UInt8], root: String, sorted: Bool, strict: Bool, excludes: ExcludeMatcher,
        visit: (TreeEntry) throws -> Void
    ) throws {
        guard let directory = fdopendir(fd) else {
            let error = errno
            close(fd)
            throw WalkError(path: root + "/" + display(prefix), operation: "opendir", errno: error)
        }
        defer { closedir(directory) }
        var names: [[UInt8]] = []
        while let dirent = readdir(directory) {
            if let name = entryName(dirent) { names.append(name) }
        }
        if sorted { names.sort { $0.lexicographicallyPrecedes($1) } }
        for name in names {
            let path = prefix.isEmpty ? name : prefix + [UInt8(ascii: "/")] + name
            let cName = name + [0]
            var info = Glibc.stat()
            let statResult = withCString(cName) { fstatat(fd, $0, &info, AT_SYMLINK_NOFOLLOW) }
            if statResult != 0 {
                let error = errno
                if error == ENOENT || !strict { continue }
                throw WalkError(path: root + "/" + display(path), operation: "stat", errno: error)
            }
            var entry = TreeEntry(
                path: path, kind: kind(info.st_mode), permissions: UInt32(info.st_mode & 0o7777),
                size: UInt64(max(0, info.st_size)), userID: info.st_uid, groupID: info.st_gid,
                device: UInt64(info.st_dev), inode: UInt64(info.st_ino), linkCount: UInt64(info.st_nlink),
                symlinkTarget: nil)
            if excludes.excludes(path, isDirectory: entry.kind == .directory) { continue }
            if entry.kind == .symlink { entry.symlinkTarget = readLink(directoryFD: fd, name: cName) }
            try visit(entry)
            guard entry.kind == .directory else { continue }
            let child = withCString(cName) { openat(fd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if child < 0 {
                let error = errno
                if error == ENOENT || !strict { continue }
                throw WalkError(path: root + "/" + display(path), operation: "open", errno: error)
            }
            try walkDirectory(
                fd: child, prefix: path, root: root, sorted: sorted, strict: strict, excludes: excludes, visit: visit)
        }
    }

    private static func kind(_ mode: mode_t) -> TreeEntry.Kind {
        switch mode & S_IFMT {
        case S_IFREG: .regular
        case S_IFDIR: .directory
        case S_IFLNK: .symlink
        default: .other
        }
    }

    private static func readLink(directoryFD: Int32, name: [UInt8]) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 4097)
        let count = withCString(name) { cName in
            buffer.withUnsafeMutableBytes { out in
                guard let base = out.baseAddress else { return -1 }
                return readlinkat(directoryFD, cName, base.assumingMemoryBound(to: CChar.self), 4096)
            }
        }
        guard count >= 0 else { return nil }
        return Array(buffer.prefix(count))
    }

    // MARK: - Helpers on raw paths

    /// Calls `body` with `bytes` (which must end in NUL) as a C string.
    static func withCString<Result>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> Result) -> Result {
        precondition(bytes.last == 0, "C string without terminating NUL")
        return bytes.withUnsafeBytes { raw in
            // Non-empty (it holds at least the NUL), so the base address exists.
            guard let base = raw.baseAddress else { preconditionFailure("empty C string buffer") }
            return body(base.assumingMemoryBound(to: CChar.self))
        }
    }

    /// `root` + `/` + `relative` as raw bytes with a trailing NUL, for `open(2)`.
    static func cPath(root: String, relative: [UInt8]) -> [UInt8] {
        var bytes = Array(root.utf8)
        if bytes.last != UInt8(ascii: "/") { bytes.append(UInt8(ascii: "/")) }
        bytes += relative
        bytes.append(0)
        return bytes
    }

    /// Free bytes for an unprivileged writer (`f_bavail × f_frsize`) on the filesystem holding `path`, or its
    /// nearest existing ancestor when `path` does not exist yet.
    static func availableBytes(at path: String) throws -> UInt64 {
        try nearestExisting(path, operation: "statvfs") { candidate, error in
            var info = statvfs()
            guard statvfs(candidate, &info) == 0 else {
                error = errno
                return nil
            }
            return UInt64(info.f_bavail) * UInt64(info.f_frsize)
        }
    }

    /// `probe` of `path`, or of its nearest existing ancestor when it fails with `ENOENT`/`ENOTDIR` (a path not
    /// created yet). `probe` returns `nil` and sets its `errno` argument on failure (read at once: Swift code between
    /// the call and a later read may change `errno`).
    /// - Throws: ``WalkError`` naming `operation` when it fails otherwise, or for `/`.
    static func nearestExisting<T>(
        _ path: String, operation: String, _ probe: (String, inout Int32) -> T?
    ) throws -> T {
        var candidate = SyncSpec.normalized(path)
        while true {
            var error: Int32 = 0
            if let value = probe(candidate, &error) { return value }
            guard error == ENOENT || error == ENOTDIR, candidate != "/" else {
                throw WalkError(path: candidate, operation: operation, errno: error)
            }
            candidate = "/" + candidate.split(separator: "/").dropLast().joined(separator: "/")
        }
    }

    /// A directory entry's name (raw bytes), `nil` for `.` and `..`.
    static func entryName(_ entry: UnsafeMutablePointer<dirent>) -> [UInt8]? {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
        return name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] ? nil : name
    }

    /// Renders raw path bytes: valid UTF-8 with printable characters as is, anything else as `\#ooo`.
    static func display(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self),
            !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f })
        {
            return text
        }
        var out = ""
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte >= 0x20, byte < 0x7f {
                out.unicodeScalars.append(Unicode.Scalar(byte))
                index += 1
                continue
            }
            // Keep valid multi-byte UTF-8 sequences readable; escape the rest.
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            if length > 1, index + length <= bytes.count,
                let text = String(validating: bytes[index..<(index + length)], as: UTF8.self)
            {
                out += text
                index += length
                continue
            }
            let octal = String(byte, radix: 8)
            out += "\\#" + String(repeating: "0", count: 3 - octal.count) + octal
            index += 1
        }
        return out
    }
}
