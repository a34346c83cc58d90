import Dispatch
import Foundation
import Logging
import Shared

#if canImport(CoreFoundation)
    // With MemberImportVisibility, glibc struct members (stat, dirent) may resolve through CoreFoundation's copy
    // of the headers (see VolumeProbe.swift).
    import CoreFoundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// `precheck`: everything the seed workflow needs on the standalone node, checked before anything changes —
/// the service's unit exists, the data is readable (SQLite files pass `PRAGMA quick_check`), the shared volume is
/// mounted, writable and big enough, the config file holds what the profile expects, the JSON files to rewrite
/// parse, and PostgreSQL is reachable with the target tables absent or empty.
///
/// Read-only: the config and rewrite steps run in their `dryRun` mode, the migration engine in its dry run, and the
/// volume's write probe removes its file. Every check runs (a failure does not stop the others) and all are
/// reported.
///
/// Spec (every field optional): `{"unit": "app.service", "readable": ["/srv/app/db/app.db"],
/// "volume": {"mountPath": "/mnt/shared", "requireMountPoint": true, "spaceFor": ["/srv/app/golden-repos"]},
/// "config": <editConfig spec>, "rewrites": [<rewriteJSONPaths spec>], "postgres": [{"databases": [...],
/// "target": "postgres://…", "schema": "app", "tables": [...], "casts": [...], "replace": false}]}`.
/// Result: `{"ok": true, "checks": [{"name", "ok", "detail"}], "sourceBytes": N}` (`sourceBytes`: the summed size
/// of `volume.spaceFor`, as ``SourceSize`` measures it). Any failed check fails the task with `VERIFICATION_FAILED`
/// and the same result (with `"ok": false`) in the details; a malformed spec fails with `INVALID_INPUT`.
public struct Precheck: TaskHandler {
    public struct Spec: Codable, Sendable, Equatable {
        public var unit: String?
        public var readable: [String]?
        public var volume: Volume?
        public var config: EditConfig.Spec?
        public var rewrites: [RewriteJSONPaths.Spec]?
        public var postgres: [Postgres]?

        public init(
            unit: String? = nil, readable: [String]? = nil, volume: Volume? = nil, config: EditConfig.Spec? = nil,
            rewrites: [RewriteJSONPaths.Spec]? = nil, postgres: [Postgres]? = nil
        ) {
            self.unit = unit
            self.readable = readable
            self.volume = volume
            self.config = config
            self.rewrites = rewrites
            self.postgres = postgres
        }
    }

    /// The volume the sync will copy onto.
    public struct Volume: Codable, Sendable, Equatable {
        public var mountPath: String
        /// Whether `mountPath` must be a mount point of its own (default `true`).
        public var requireMountPoint: Bool?
        /// Trees (or files) that will be copied onto the volume: free space must be at least 110 % of their size.
        public var spaceFor: [String]?

        public init(mountPath: String, requireMountPoint: Bool? = nil, spaceFor: [String]? = nil) {
            self.mountPath = mountPath
            self.requireMountPoint = requireMountPoint
            self.spaceFor = spaceFor
        }
    }

    /// A planned SQLite → PostgreSQL migration (the `migrateSQLite` fields the dry run needs).
    public struct Postgres: Codable, Sendable, Equatable {
        public var databases: [String]
        public var target: String
        public var schema: String?
        public var tables: [String]?
        public var casts: [String]?
        public var replace: Bool?

        public init(
            databases: [String], target: String, schema: String? = nil, tables: [String]? = nil,
            casts: [String]? = nil, replace: Bool? = nil
        ) {
            self.databases = databases
            self.target = target
            self.schema = schema
            self.tables = tables
            self.casts = casts
            self.replace = replace
        }
    }

    public struct Check: Codable, Sendable, Equatable {
        public var name: String
        public var ok: Bool
        public var detail: String
    }

    public struct Report: Codable, Sendable, Equatable {
        public var ok: Bool
        public var checks: [Check]
        public var sourceBytes: UInt64
    }

    /// Free space needed on the volume beyond the size of `spaceFor` (the sync's own precheck uses the same).
    static let spaceMargin = 0.10
    /// Entries of one `readable` directory tree looked at before the check stops (and passes) early.
    static let maximumWalkEntries = 2_000_000

    /// Connects to the manager the agent drives (`--systemd`), for the `unit` check.
    let connect: @Sendable () async throws -> SystemdManager
    let logger: Logger

    init(connect: @escaping @Sendable () async throws -> SystemdManager, logger: Logger) {
        self.connect = connect
        self.logger = logger
    }

    public func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let request: Spec
        do {
            request = try spec.decode(Spec.self)
        } catch {
            throw TaskFailure(
                code: .invalidInput,
                message: "the precheck spec must look like {\"unit\": NAME, \"readable\": [PATH], \"volume\": "
                    + "{\"mountPath\": PATH, \"spaceFor\": [PATH]}, \"config\": {…}, \"rewrites\": [{…}], "
                    + "\"postgres\": [{…}]}: \(error)")
        }
        let report = try await check(request) { check in
            await progress(.object(["check": .string(check.name), "ok": .bool(check.ok)]))
        }
        let value = try JSONValue(encoding: report)
        let failed = report.checks.filter { !$0.ok }
        guard failed.isEmpty else {
            throw TaskFailure(
                code: .verificationFailed,
                message: "\(failed.count) of \(report.checks.count) prechecks failed: "
                    + failed.map { "\($0.name): \($0.detail)" }.joined(separator: "; "),
                details: value)
        }
        return value
    }

    /// Runs every check of `spec`.
    /// - Throws: ``MusterError`` `.invalidInput` for a malformed spec (before any check runs).
    func check(_ spec: Spec, onCheck: (Check) async -> Void = { _ in }) async throws -> Report {
        let unit = try spec.unit.map { try UnitName($0) }
        for path in (spec.readable ?? []) + (spec.volume.map { [$0.mountPath] + ($0.spaceFor ?? []) } ?? []) {
            guard path.hasPrefix("/") else { throw MusterError(.invalidInput, "'\(path)' is not an absolute path") }
        }
        let migrations = try (spec.postgres ?? []).map(Self.migration)

        var checks: [Check] = []
        func add(_ check: Check) async {
            checks.append(check)
            await onCheck(check)
        }
        if let unit {
            await add(await checkUnit(unit))
        }
        for path in spec.readable ?? [] {
            await add(await runBlocking { Self.checkReadable(path) })
        }
        var sourceBytes: UInt64 = 0
        if let volume = spec.volume {
            let (volumeChecks, bytes) = await Self.checkVolume(volume)
            for check in volumeChecks { await add(check) }
            sourceBytes = bytes
        }
        if let config = spec.config {
            await add(await runBlocking { Self.checkConfig(config) })
        }
        for rewrite in spec.rewrites ?? [] {
            let volume = spec.volume?.mountPath
            for check in await runBlocking({ Self.checkRewrite(rewrite, volume: volume) }) { await add(check) }
        }
        for migration in migrations {
            await add(await checkMigration(migration))
        }
        return Report(ok: checks.allSatisfy(\.ok), checks: checks, sourceBytes: sourceBytes)
    }

    // MARK: - Unit

    func checkUnit(_ unit: UnitName) async -> Check {
        let name = "unit \(unit) present"
        do {
            let state = try await connect().state(of: unit)
            guard state.loadState != "not-found" else {
                return Check(name: name, ok: false, detail: "unit \(unit) does not exist on this node")
            }
            return Check(
                name: name, ok: true,
                detail: "\(state.loadState), \(state.activeState) (\(state.subState))"
                    + (state.fragmentPath.isEmpty ? "" : ", \(state.fragmentPath)"))
        } catch let error as MusterError {
            return Check(name: name, ok: false, detail: "cannot ask systemd: \(error.message)")
        } catch {
            return Check(name: name, ok: false, detail: "cannot ask systemd: \(error)")
        }
    }

    // MARK: - Readable

    /// The first 16 bytes of every SQLite 3 database file.
    static let sqliteMagic = Array("SQLite format 3\u{0}".utf8)
    /// File name extensions taken to mean "this should be a SQLite database".
    static let sqliteExtensions: Set<String> = ["db", "sqlite", "sqlite3"]

    /// A file must open for reading (SQLite files: and pass `PRAGMA quick_check`), a directory must be listable and
    /// everything below it readable (the first entry that is not is named).
    static func checkReadable(_ path: String) -> Check {
        let name = "readable \(path)"
        var info = stat()
        guard stat(path, &info) == 0 else {
            let reason = errno == ENOENT ? "does not exist" : "cannot stat: \(String(cString: strerror(errno)))"
            return Check(name: name, ok: false, detail: reason)
        }
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            let walk = walkReadable(path)
            if let problem = walk.problem { return Check(name: name, ok: false, detail: problem) }
            let more = walk.entries >= maximumWalkEntries ? " (stopped looking after \(walk.entries))" : ""
            return Check(name: name, ok: true, detail: "directory, \(walk.entries) entries readable\(more)")
        case S_IFREG:
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else {
                return Check(name: name, ok: false, detail: "cannot open: \(String(cString: strerror(errno)))")
            }
            var header = [UInt8](repeating: 0, count: 16)
            let count = header.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            let readErrno = errno
            close(fd)
            guard count >= 0 else {
                return Check(name: name, ok: false, detail: "cannot read: \(String(cString: strerror(readErrno)))")
            }
            let size = UInt64(max(0, info.st_size))
            let isSQLite = count == 16 && header == sqliteMagic
            let looksLikeSQLite = sqliteExtensions.contains((path as NSString).pathExtension.lowercased())
            guard isSQLite || looksLikeSQLite else {
                return Check(name: name, ok: true, detail: "file, \(size) bytes")
            }
            guard isSQLite else {
                return Check(
                    name: name, ok: false,
                    detail: size == 0 ? "empty file, not a SQLite database" : "not a SQLite database (no SQLite header)"
                )
            }
            let verdict = quickCheck(path, size: size)
            return Check(name: name, ok: verdict.ok, detail: verdict.detail)
        default:
            return Check(name: name, ok: true, detail: "special file")
        }
    }

    /// Opens `path` read-only and runs `PRAGMA quick_check`.
    static func quickCheck(_ path: String, size: UInt64 = 0) -> (ok: Bool, detail: String) {
        do {
            let database = try SQLiteDatabase(path: path)
            let rows = try database.rows("PRAGMA quick_check")
            let lines = rows.compactMap { $0.first?.string }
            guard lines == ["ok"] else {
                return (
                    false,
                    "SQLite database is corrupt: quick_check: "
                        + lines.prefix(3).joined(separator: "; ") + (lines.count > 3 ? "; …" : "")
                )
            }
            return (true, "SQLite database, \(size) bytes, quick_check ok")
        } catch {
            return (false, error.message)
        }
    }

    /// Walks a tree without following symlinks, opening every directory and regular file for reading.
    static func walkReadable(_ root: String) -> (entries: Int, problem: String?) {
        var pending: [[UInt8]] = [Array(root.utf8)]
        var entries = 0
        func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
        while let directory = pending.popLast() {
            let fd = TreeWalker.withCString(directory + [0]) {
                open($0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            guard fd >= 0, let stream = fdopendir(fd) else {
                let reason = String(cString: strerror(errno))
                if fd >= 0 { close(fd) }
                return (entries, "cannot list \(text(directory)): \(reason)")
            }
            defer { closedir(stream) }
            while let dirent = readdir(stream) {
                let name = withUnsafeBytes(of: dirent.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
                if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
                entries += 1
                if entries >= maximumWalkEntries { return (entries, nil) }
                let path = directory + [UInt8(ascii: "/")] + name
                var info = stat()
                let status = TreeWalker.withCString(name + [0]) { fstatat(fd, $0, &info, AT_SYMLINK_NOFOLLOW) }
                guard status == 0 else {
                    return (entries, "cannot read \(text(path)): \(String(cString: strerror(errno)))")
                }
                switch info.st_mode & S_IFMT {
                case S_IFDIR:
                    pending.append(path)
                case S_IFREG:
                    let file = TreeWalker.withCString(name + [0]) {
                        openat(fd, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
                    }
                    guard file >= 0 else {
                        return (entries, "cannot read \(text(path)): \(String(cString: strerror(errno)))")
                    }
                    close(file)
                default:
                    continue
                }
            }
        }
        return (entries, nil)
    }

    // MARK: - Volume

    /// Mount point (unless not required), write probe, and free space for `spaceFor`.
    static func checkVolume(
        _ volume: Volume, mountInfoPath: String = "/proc/self/mountinfo"
    ) async -> (checks: [Check], sourceBytes: UInt64) {
        let mountPath = MountTable.normalize(volume.mountPath)
        var checks: [Check] = []
        if volume.requireMountPoint ?? true {
            let name = "volume \(mountPath) is a mount point"
            do {
                if let entry = try MountTable.read(path: mountInfoPath).mount(at: mountPath) {
                    checks.append(
                        Check(name: name, ok: true, detail: "\(entry.fileSystemType) from \(entry.source)"))
                } else {
                    checks.append(
                        Check(
                            name: name, ok: false,
                            detail: "\(mountPath) is not a mount point (no entry in the mount table); "
                                + "mount the shared volume first"))
                }
            } catch {
                checks.append(Check(name: name, ok: false, detail: "cannot read the mount table: \(error)"))
            }
        }
        let writable = "volume \(mountPath) writable"
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: mountPath, isDirectory: &isDirectory) || !isDirectory.boolValue {
            checks.append(Check(name: writable, ok: false, detail: "\(mountPath) is not a directory"))
        } else if let problem = await VolumeProbe().writeProbe(directory: mountPath) {
            checks.append(Check(name: writable, ok: false, detail: problem))
        } else {
            checks.append(Check(name: writable, ok: true, detail: "a probe file was written, synced and removed"))
        }

        guard let sources = volume.spaceFor, !sources.isEmpty else { return (checks, 0) }
        let name = "volume \(mountPath) has space for \(sources.joined(separator: ", "))"
        var total: UInt64 = 0
        var problems: [String] = []
        for source in sources {
            switch await measure(source) {
            case .success(let bytes): total += bytes
            case .failure(let error): problems.append(error.message)
            }
        }
        guard problems.isEmpty else {
            checks.append(Check(name: name, ok: false, detail: problems.joined(separator: "; ")))
            return (checks, total)
        }
        guard let space = VolumeProbe.space(at: mountPath) else {
            checks.append(
                Check(name: name, ok: false, detail: "cannot read the free space of \(mountPath) (statvfs failed)"))
            return (checks, total)
        }
        let verdict = spaceVerdict(free: space.free, sourceBytes: total)
        checks.append(Check(name: name, ok: verdict.ok, detail: verdict.detail))
        return (checks, total)
    }

    /// Whether `free` bytes hold `sourceBytes` plus ``spaceMargin``, and the numbers in human units.
    static func spaceVerdict(free: UInt64, sourceBytes: UInt64) -> (ok: Bool, detail: String) {
        let required = UInt64((Double(sourceBytes) * (1 + spaceMargin)).rounded(.up))
        let needs =
            "needs \(SyncEngine.format(required)) (\(SyncEngine.format(sourceBytes)) + \(Int(spaceMargin * 100))% margin)"
        return free >= required
            ? (true, "\(needs), \(SyncEngine.format(free)) free")
            : (false, "not enough space: \(needs) but only \(SyncEngine.format(free)) is free")
    }

    /// The size of a tree as ``SourceSize`` counts it (a single file: its size rounded up to 4 KiB).
    static func measure(_ path: String) async -> Result<UInt64, MusterError> {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let reason = errno == ENOENT ? "does not exist" : String(cString: strerror(errno))
            return .failure(MusterError(.notFound, "cannot measure \(path): \(reason)"))
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            return .success((UInt64(max(0, info.st_size)) + 4095) / 4096 * 4096)
        }
        do {
            let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
            return .success(
                try await SourceSize.measure(root: path, excludes: ExcludeMatcher([]), workers: workers).bytes)
        } catch {
            return .failure(MusterError(.io, "cannot measure \(path): \(error)"))
        }
    }

    // MARK: - Config and rewrites

    /// The `editConfig` step in its dry run: the file exists, parses in its format, and `expect` holds.
    static func checkConfig(_ spec: EditConfig.Spec) -> Check {
        let name = "config \(spec.file)"
        var dryRun = spec
        dryRun.dryRun = true
        do {
            let report = try EditConfig().apply(dryRun)
            let detail =
                report.changed.isEmpty
                ? "already holds every value to set"
                : "\(spec.format.rawValue) parses, expectations hold; would set \(report.changed.joined(separator: ", "))"
            return Check(name: name, ok: true, detail: detail)
        } catch {
            return Check(name: name, ok: false, detail: message(error))
        }
    }

    /// The `rewriteJSONPaths` step in its dry run. Patterns under the volume (files the sync creates) are skipped.
    static func checkRewrite(_ spec: RewriteJSONPaths.Spec, volume: String?) -> [Check] {
        let prefix = volume.map { MountTable.normalize($0) + "/" }
        let skipped = spec.files.filter { pattern in prefix.map { pattern.hasPrefix($0) } ?? false }
        var checks = skipped.map {
            Check(name: "rewrite \($0)", ok: true, detail: "skipped: \($0) is created by the sync")
        }
        let files = spec.files.filter { !skipped.contains($0) }
        guard !files.isEmpty else { return checks }
        let name = "rewrite \(files.joined(separator: ", "))"
        var dryRun = spec
        dryRun.files = files
        dryRun.dryRun = true
        do {
            let report = try RewriteJSONPaths().apply(dryRun)
            checks.append(
                Check(
                    name: name, ok: true,
                    detail: "\(report.files.count) JSON files parse; \(report.valuesRewritten) values in "
                        + "\(report.filesChanged) files would be rewritten"))
        } catch {
            checks.append(Check(name: name, ok: false, detail: message(error)))
        }
        return checks
    }

    /// An error's message without the edit steps' "nothing was changed" tail (a precheck never changes anything).
    static func message(_ error: any Error) -> String {
        var text = (error as? MusterError)?.message ?? "\(error)"
        for tail in ["; the file was not changed", "; no file was changed"] where text.hasSuffix(tail) {
            text = String(text.dropLast(tail.count))
        }
        return text
    }

    // MARK: - PostgreSQL

    /// A `postgres` entry as a dry-run migration spec.
    /// - Throws: ``MusterError`` `.invalidInput` (no database, bad URL, bad cast).
    static func migration(_ entry: Postgres) throws -> MigrationSpec {
        guard !entry.databases.isEmpty else {
            throw MusterError(.invalidInput, "postgres.databases: at least one SQLite file is needed")
        }
        do {
            _ = try PostgresTarget(url: entry.target)
        } catch {
            throw MusterError(.invalidInput, "postgres.target: \(error.message)")
        }
        var casts: [CastRule] = []
        for text in entry.casts ?? [] {
            do {
                casts.append(try CastRule(parsing: text))
            } catch {
                throw MusterError(.invalidInput, "postgres.casts: \(error.message)", hint: error.hint)
            }
        }
        return MigrationSpec(
            databases: entry.databases, target: entry.target, schema: entry.schema ?? "public", tables: entry.tables,
            casts: casts, replace: entry.replace ?? false, dryRun: true)
    }

    /// The migration engine's dry run: sources readable, PostgreSQL reachable, target tables absent, empty, or
    /// (with `replace`) to be replaced.
    func checkMigration(_ spec: MigrationSpec) async -> Check {
        let display = (try? PostgresTarget(url: spec.target).display) ?? "?"
        let name = "postgres \(display) schema \(spec.schema)"
        do {
            let report = try await MigrationEngine(spec: spec, logger: logger).run()
            let actions = Dictionary(grouping: report.tables, by: \.action).sorted { $0.key.rawValue < $1.key.rawValue }
            let plan = actions.map { "\($0.key.rawValue) \($0.value.map(\.table).joined(separator: ", "))" }
            return Check(
                name: name, ok: true,
                detail: "reachable; \(report.tables.count) tables"
                    + (plan.isEmpty ? "" : ": " + plan.joined(separator: "; ")))
        } catch {
            return Check(name: name, ok: false, detail: Self.message(error))
        }
    }
}
