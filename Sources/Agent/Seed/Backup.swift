import Crypto
import Dispatch
import Foundation
import Shared

#if canImport(CoreFoundation)
    // With MemberImportVisibility, glibc struct members (stat) may resolve through CoreFoundation's copy of the
    // headers (see VolumeProbe.swift).
    import CoreFoundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// `backup`: copies the service's SQLite databases and config files into the agent's state directory before the
/// seed workflow changes anything, so a rollback has the originals.
///
/// SQLite files are copied with SQLite's online backup API (a consistent copy even while the service still writes;
/// the copy is switched to rollback-journal mode so it is one self-contained file); other files byte for byte with
/// their mode, and the copy's sha256 compared with the source's. Every copy is written as `<dir>/.tmp-…`, synced
/// and renamed into place, so a backup file is whole or absent. Sources are only ever read.
///
/// Backups go to `<stateDirectory>/backups/<name>/files/<source path>` (directories `0700`), and
/// `<dir>/manifest.json` lists `[{"source", "backup", "bytes", "sha256", "kind": "sqlite|file"}]`. Running the
/// task again keeps every backup the manifest lists whose file still has its sha256 (`"reused": true`): the first
/// backup is the original, as with the edit steps' `.pre-cluster` files.
///
/// Spec: `{"name": "seed-<id>", "sqlite": ["/srv/app/db/app.db"], "files": ["/etc/app/config.json"]}`; `name`
/// matches `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`. A missing source fails with `NOT_FOUND` before anything is
/// created. Result: `{"directory", "items": [{"source", "backup", "bytes", "sha256", "kind", "reused"}],
/// "bytes": total}`.
public struct Backup: TaskHandler {
    public struct Spec: Codable, Sendable, Equatable {
        public var name: String
        public var sqlite: [String]?
        public var files: [String]?

        public init(name: String, sqlite: [String]? = nil, files: [String]? = nil) {
            self.name = name
            self.sqlite = sqlite
            self.files = files
        }
    }

    public enum Kind: String, Codable, Sendable {
        case sqlite
        case file
    }

    /// One line of `manifest.json`.
    public struct Entry: Codable, Sendable, Equatable {
        public var source: String
        public var backup: String
        public var bytes: UInt64
        public var sha256: String
        public var kind: Kind
    }

    public struct Item: Codable, Sendable, Equatable {
        public var source: String
        public var backup: String
        public var bytes: UInt64
        public var sha256: String
        public var kind: Kind
        /// The backup from an earlier run was kept.
        public var reused: Bool
    }

    public struct Report: Codable, Sendable, Equatable {
        public var directory: String
        public var items: [Item]
        public var bytes: UInt64
    }

    let stateDirectory: String

    public init(stateDirectory: String) {
        self.stateDirectory = stateDirectory
    }

    public func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let request: Spec
        do {
            request = try spec.decode(Spec.self)
        } catch {
            throw TaskFailure(
                code: .invalidInput,
                message: "the backup spec must look like {\"name\": NAME, \"sqlite\": [PATH], \"files\": [PATH]}: "
                    + "\(error)")
        }
        // Copying and hashing are blocking system calls: off the cooperative pool (STYLE.md convention 4).
        let report = try await runBlocking { try self.apply(request) }
        await progress(.object(["items": .number(Double(report.items.count)), "bytes": .number(Double(report.bytes))]))
        return try JSONValue(encoding: report)
    }

    /// The directory backups named `name` go to.
    func directory(name: String) -> String { "\(stateDirectory)/backups/\(name)" }

    /// Backs up every source of `spec`.
    /// - Throws: ``MusterError`` `.invalidInput` (name, paths), `.notFound` (a missing source, nothing created),
    ///   `.io`, `.conflict` (a source changed while it was copied).
    func apply(_ spec: Spec) throws -> Report {
        try Self.validate(name: spec.name)
        let sources = (spec.sqlite ?? []).map { ($0, Kind.sqlite) } + (spec.files ?? []).map { ($0, Kind.file) }
        guard !sources.isEmpty else {
            throw MusterError(.invalidInput, "backup \(spec.name): no sqlite or files to back up")
        }
        var seen = Set<String>()
        var missing: [String] = []
        for (source, _) in sources {
            try Self.validate(path: source)
            guard seen.insert(source).inserted else {
                throw MusterError(.invalidInput, "backup \(spec.name): \(source) is listed twice")
            }
            var info = stat()
            if stat(source, &info) != 0 {
                missing.append(source)
            } else if info.st_mode & S_IFMT != S_IFREG {
                throw MusterError(.invalidInput, "backup \(spec.name): \(source) is not a regular file")
            }
        }
        guard missing.isEmpty else {
            throw MusterError(
                .notFound,
                "backup \(spec.name): \(missing.joined(separator: ", ")) \(missing.count == 1 ? "does" : "do") not "
                    + "exist; nothing was backed up")
        }

        let directory = directory(name: spec.name)
        try Self.makeDirectory("\(stateDirectory)/backups")
        try Self.makeDirectory(directory)
        let manifestPath = "\(directory)/manifest.json"
        var manifest = try Self.readManifest(manifestPath)

        var items: [Item] = []
        for (source, kind) in sources {
            if let entry = manifest.first(where: { $0.source == source && $0.kind == kind }),
                FileManager.default.fileExists(atPath: entry.backup),
                (try? Self.digest(entry.backup))?.sha256 == entry.sha256
            {
                items.append(
                    Item(
                        source: source, backup: entry.backup, bytes: entry.bytes, sha256: entry.sha256, kind: kind,
                        reused: true))
                continue
            }
            let backup = "\(directory)/files\(source)"
            try Self.makeDirectories(from: directory, to: (backup as NSString).deletingLastPathComponent)
            let entry = try Self.copy(source, to: backup, kind: kind, directory: directory)
            manifest.removeAll { $0.source == source }
            manifest.append(entry)
            // After each copy, so an interrupted run still reuses what it finished.
            try Self.writeManifest(manifest, to: manifestPath)
            items.append(
                Item(
                    source: source, backup: entry.backup, bytes: entry.bytes, sha256: entry.sha256, kind: kind,
                    reused: false))
        }
        return Report(directory: directory, items: items, bytes: items.reduce(0) { $0 + $1.bytes })
    }

    // MARK: - Validation

    /// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`: one path component, never `.` or `..`.
    static func validate(name: String) throws {
        let bytes = Array(name.utf8)
        func isAlphanumeric(_ b: UInt8) -> Bool {
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
                || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
        }
        guard let first = bytes.first, isAlphanumeric(first), bytes.count <= 128,
            bytes.allSatisfy({
                isAlphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-")
            })
        else {
            throw MusterError(
                .invalidInput, "backup name '\(name)' must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
        }
    }

    /// An absolute path without `.`, `..` or empty components (it is mirrored under the backup directory).
    static func validate(path: String) throws {
        let components = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard path.hasPrefix("/"), !components.isEmpty,
            components.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }), !path.contains("\u{0}")
        else {
            throw MusterError(.invalidInput, "backup source '\(path)' must be an absolute path without . or ..")
        }
    }

    // MARK: - Files

    /// Copies `source` into `backup` through a temporary file in `directory`.
    static func copy(_ source: String, to backup: String, kind: Kind, directory: String) throws -> Entry {
        var random = SystemRandomNumberGenerator()
        let temp = "\(directory)/.tmp-\(random.next() % 1_000_000_000)-\((source as NSString).lastPathComponent)"
        defer {
            // Left only when something failed before the rename (SQLite may leave a journal too).
            unlink(temp)
            unlink(temp + "-journal")
        }
        var info = stat()
        guard stat(source, &info) == 0 else { throw ioError("stat", source) }
        let mode = info.st_mode & 0o7777
        let copied: (size: UInt64, sha256: String)
        switch kind {
        case .sqlite:
            try SQLiteDatabase.backup(source: source, destination: temp, standalone: true)
            guard chmod(temp, mode) == 0 else { throw ioError("chmod", temp) }
            try sync(temp)
            copied = try digest(temp)
        case .file:
            let input = open(source, O_RDONLY | O_CLOEXEC)
            guard input >= 0 else { throw ioError("open", source) }
            defer { close(input) }
            let output = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard output >= 0 else { throw ioError("create", temp) }
            let streamed: (size: UInt64, digest: String)
            do {
                streamed = try HashingCopy.copy(from: input, to: output)
            } catch {
                close(output)
                switch error {
                case .read(let code):
                    throw MusterError(.io, "cannot read \(source): \(String(cString: strerror(code)))")
                case .write(let code):
                    throw MusterError(.io, "cannot write \(temp): \(String(cString: strerror(code)))")
                }
            }
            // The umask may have narrowed the mode at creation; set the source's exactly.
            guard fchmod(output, mode) == 0, fsync(output) == 0 else {
                let error = ioError("write", temp)
                close(output)
                throw error
            }
            guard close(output) == 0 else { throw ioError("close", temp) }
            copied = try digest(temp)
            let now = try digest(source)
            guard copied.sha256 == streamed.digest, now.sha256 == copied.sha256 else {
                throw MusterError(
                    .conflict, "\(source) changed while it was copied; nothing was kept",
                    hint: "stop whatever writes to it and run the backup again")
            }
        }
        guard rename(temp, backup) == 0 else { throw ioError("rename into place", backup) }
        try sync((backup as NSString).deletingLastPathComponent)
        return Entry(source: source, backup: backup, bytes: copied.size, sha256: copied.sha256, kind: kind)
    }

    /// Size and hex sha256 of a file, read in 1 MiB chunks.
    static func digest(_ path: String) throws -> (size: UInt64, sha256: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("open", path) }
        defer { close(fd) }
        var hasher = SHA256()
        var size: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ioError("read", path)
            }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            size += UInt64(count)
        }
        return (size, ContentDigest.hex(hasher.finalize()))
    }

    /// `fsync` of a file or directory.
    static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("fsync", path) }
    }

    /// Creates `path` (one level) with mode `0700` unless it exists as a directory.
    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o700) == 0 { return }
        guard errno == EEXIST else { throw ioError("create directory", path) }
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw MusterError(.io, "\(path) exists and is not a directory")
        }
    }

    /// Creates every directory from below `base` down to `path` (`path` lies under `base`).
    static func makeDirectories(from base: String, to path: String) throws {
        var current = base
        for component in path.dropFirst(base.count).split(separator: "/") {
            current += "/\(component)"
            try makeDirectory(current)
        }
    }

    static func readManifest(_ path: String) throws -> [Entry] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        do {
            return try JSONDecoder().decode([Entry].self, from: data)
        } catch {
            throw MusterError(
                .io, "the backup manifest \(path) is not valid: \(error)",
                hint: "move the backup directory aside and run the backup again")
        }
    }

    static func writeManifest(_ entries: [Entry], to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try SecureFile.write(Array(try encoder.encode(entries)) + [0x0A], to: path, mode: 0o600)
    }

    static func ioError(_ operation: String, _ path: String) -> MusterError {
        MusterError(.io, "cannot \(operation) \(path): \(String(cString: strerror(errno)))")
    }
}
