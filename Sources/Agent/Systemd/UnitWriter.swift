import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Writes and removes Muster's unit files in one unit directory (e.g. `/etc/systemd/system` or
/// `$XDG_CONFIG_HOME/systemd/user`), never touching a file that is not ours.
///
/// Writes are atomic: the text goes to a temporary file in the same directory, is `fsync`ed, renamed over the
/// target, and the directory is `fsync`ed, so systemd never reads half a unit. A target that exists without our
/// `X-Muster-Owner=` marker (or is a symlink, e.g. a masked unit) is refused with ``MusterError/Code/conflict``
/// naming the file; so is one owned by a different owner.
struct UnitWriter: Sendable {
    let directory: String

    enum Outcome: Sendable, Equatable {
        case created
        case updated
        /// Same bytes as before: nothing written (reattach uses this to restart only changed services).
        case unchanged
    }

    func path(of name: UnitName) -> String { "\(directory)/\(name.rawValue)" }

    /// Renders `file` and writes it as `name`.
    /// - Throws: ``MusterError`` `.invalidInput` (a value that cannot be written safely, field named),
    ///   `.conflict` (the file exists and is not ours), `.io`.
    @discardableResult
    func write(_ file: UnitFile, as name: UnitName) throws -> Outcome {
        let text: String
        do {
            text = try file.render()
        } catch {
            throw error.musterError(unit: name.rawValue)
        }
        let target = path(of: name)
        let existing = try readExisting(target)
        if let existing {
            try checkOwnership(existing, expected: file.owner, path: target)
            if existing == text { return .unchanged }
        }
        try atomicWrite(text, to: target)
        return existing == nil ? .created : .updated
    }

    /// Checks that `file` renders and that `name` is free or ours, without writing anything.
    /// - Throws: the same errors as ``write(_:as:)``.
    func preflight(_ file: UnitFile, as name: UnitName) throws {
        do {
            _ = try file.render()
        } catch {
            throw error.musterError(unit: name.rawValue)
        }
        let target = path(of: name)
        if let existing = try readExisting(target) { try checkOwnership(existing, expected: file.owner, path: target) }
    }

    /// Removes `name` if it is ours (and, when `owner` is given, owned by `owner`).
    /// - Returns: `false` if there was no such file (detaching twice is a no-op).
    /// - Throws: `.conflict` when the file exists and is not ours; `.io`.
    @discardableResult
    func remove(_ name: UnitName, owner: String? = nil) throws -> Bool {
        let target = path(of: name)
        guard let existing = try readExisting(target) else { return false }
        guard let found = UnitFile.owner(inContents: existing) else {
            throw MusterError(
                .conflict, "\(target) was not written by Muster; refusing to remove it",
                hint: "remove or rename the file yourself if it is no longer needed")
        }
        if let owner, found != owner {
            throw MusterError(.conflict, "\(target) belongs to \(found), not \(owner); refusing to remove it")
        }
        guard unlink(target) == 0 else { throw Self.ioError("unlink", target) }
        try syncDirectory()
        return true
    }

    /// The owner marker of an existing unit file, `nil` if there is no file, `""` if it exists but is not ours.
    func owner(of name: UnitName) throws -> String? {
        guard let existing = try readExisting(path(of: name)) else { return nil }
        return UnitFile.owner(inContents: existing) ?? ""
    }

    /// Units in the directory carrying an owner marker for which `matches` is true (e.g. one module's units).
    func units(ownedBy matches: (String) -> Bool) throws -> [UnitName] {
        guard let dir = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw Self.ioError("opendir", directory)
        }
        defer { closedir(dir) }
        var names: [UnitName] = []
        while let entry = readdir(dir) {
            let fileName = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard !fileName.hasPrefix("."), let name = try? UnitName(fileName),
                let text = try? readExisting(path(of: name)), let owner = UnitFile.owner(inContents: text),
                matches(owner)
            else { continue }
            names.append(name)
        }
        return names.sorted()
    }

    // MARK: - Internals

    private func checkOwnership(_ existing: String, expected: String, path: String) throws {
        guard let found = UnitFile.owner(inContents: existing) else {
            throw MusterError(
                .conflict, "\(path) already exists and was not written by Muster; refusing to overwrite it",
                hint: "rename the module or service, choose another unit prefix, or remove the file yourself")
        }
        guard found == expected else {
            throw MusterError(
                .conflict, "\(path) belongs to \(found), not \(expected); refusing to overwrite it",
                hint: "two modules map to the same unit name; rename one of them")
        }
    }

    /// The file's text, `nil` if it does not exist; a symlink or non-regular file counts as "not ours".
    private func readExisting(_ path: String) throws -> String? {
        var st = Glibc.stat()
        if lstat(path, &st) != 0 {
            if errno == ENOENT { return nil }
            throw Self.ioError("lstat", path)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw MusterError(
                .conflict, "\(path) exists and is not a regular file (a symlink or masked unit?); refusing to touch it")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw Self.ioError("open", path) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.ioError("read", path)
            }
            if n == 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
            if bytes.count > 1 << 20 { break }  // unit files are small; do not read a huge foreign file whole
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func atomicWrite(_ text: String, to target: String) throws {
        var random = SystemRandomNumberGenerator()
        let temp =
            "\(directory)/.\(target.split(separator: "/").last ?? "unit").muster-\(random.next() % 1_000_000_000)"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw Self.ioError("open", temp) }
        var ok = false
        defer {
            if !ok { unlink(temp) }
        }
        do {
            defer { close(fd) }
            let bytes = Array(text.utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes {
                    Glibc.write(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset)
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw Self.ioError("write", temp)
                }
                offset += n
            }
            guard fsync(fd) == 0 else { throw Self.ioError("fsync", temp) }
        }
        guard rename(temp, target) == 0 else { throw Self.ioError("rename", target) }
        ok = true
        try syncDirectory()
    }

    private func syncDirectory() throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.ioError("open", directory) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw Self.ioError("fsync", directory) }
    }

    private static func ioError(_ what: String, _ path: String) -> MusterError {
        let code = errno
        return MusterError(.io, "\(what) \(path): \(String(cString: strerror(code)))")
    }
}
