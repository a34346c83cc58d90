import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Agent

#if canImport(Glibc)
    import Glibc
#endif

/// A temporary directory with helpers for the precheck's real files.
struct PrecheckFixture {
    let directory: String

    init() throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent(
                "muster-precheck-\(UUID().uuidString.prefix(8))"
            )
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let path = "\(directory)/\(name)"
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    /// A precheck whose `unit` check cannot reach systemd (tests that do not use a unit).
    static let noSystemd = Precheck(
        connect: { throw MusterError(.connectionFailed, "no systemd manager in this test") },
        logger: Logger(label: "test"))
}

@Suite("precheck: every check runs and is reported, nothing changes")
struct PrecheckTests {
    // MARK: - readable

    @Test func readableFilesDirectoriesAndSQLite() throws {
        let fixture = try PrecheckFixture()
        defer { fixture.remove() }
        let plain = try fixture.write("config.json", "{}")
        try fixture.write("repos/a/objects/1", "x")
        try fixture.write("repos/b/HEAD", "ref")
        let database = try SQLiteFixture("app.db")
        try database.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');")

        let file = Precheck.checkReadable(plain)
        #expect(file.ok && file.detail == "file, 2 bytes" && file.name == "readable \(plain)")
        let directory = Precheck.checkReadable("\(fixture.directory)/repos")
        #expect(directory.ok, "\(directory.detail)")
        #expect(directory.detail == "directory, 5 entries readable")
        let sqlite = Precheck.checkReadable(database.path)
        #expect(sqlite.ok && sqlite.detail.contains("quick_check ok"), "\(sqlite.detail)")
    }

    @Test func missingNotSQLiteAndCorruptSQLiteFail() throws {
        let fixture = try PrecheckFixture()
        defer { fixture.remove() }
        let missing = Precheck.checkReadable("\(fixture.directory)/absent.db")
        #expect(!missing.ok && missing.detail == "does not exist")

        let text = try fixture.write("text.db", "hello, not a database")
        let notSQLite = Precheck.checkReadable(text)
        #expect(!notSQLite.ok && notSQLite.detail.contains("not a SQLite database"), "\(notSQLite.detail)")
        let empty = try fixture.write("empty.sqlite", "")
        #expect(Precheck.checkReadable(empty).detail == "empty file, not a SQLite database")

        // A real database with a damaged table page.
        let database = try SQLiteFixture("corrupt.db")
        try database.exec(
            """
            CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
            INSERT INTO t SELECT i, printf('%0100d', i) FROM n;
            """)
        let handle = try #require(FileHandle(forWritingAtPath: database.path))
        try handle.seek(toOffset: 4096 * 3)
        try handle.write(contentsOf: Data(repeating: 0xA5, count: 4096 * 2))
        try handle.close()
        let before = try database.sha256()
        let corrupt = Precheck.checkReadable(database.path)
        #expect(!corrupt.ok && corrupt.detail.contains("corrupt"), "\(corrupt.detail)")
        #expect(try database.sha256() == before, "read-only")
    }

    @Test(.enabled(if: getuid() != 0, "root reads files whatever their mode"))
    func unreadableFileAndDirectoryEntryFail() throws {
        let fixture = try PrecheckFixture()
        defer {
            chmod("\(fixture.directory)/secret", 0o600)
            chmod("\(fixture.directory)/tree/sub/locked", 0o600)
            fixture.remove()
        }
        let secret = try fixture.write("secret", "x")
        chmod(secret, 0)
        #expect(!Precheck.checkReadable(secret).ok)
        let locked = try fixture.write("tree/sub/locked", "x")
        chmod(locked, 0)
        let tree = Precheck.checkReadable("\(fixture.directory)/tree")
        #expect(!tree.ok && tree.detail.contains(locked), "\(tree.detail)")
    }

    // MARK: - volume

    @Test func volumeMountPointWritableAndSpace() async throws {
        let fixture = try PrecheckFixture()
        defer { fixture.remove() }
        try fixture.write("repos/a", String(repeating: "x", count: 10_000))

        // A plain directory is not a mount point, but writable.
        let plain = await Precheck.checkVolume(.init(mountPath: fixture.directory))
        #expect(plain.checks.map(\.ok) == [false, true], "\(plain.checks)")
        #expect(plain.checks[0].detail.contains("is not a mount point"))
        let relaxed = await Precheck.checkVolume(
            .init(mountPath: fixture.directory, requireMountPoint: false, spaceFor: ["\(fixture.directory)/repos"]))
        #expect(relaxed.checks.map(\.ok) == [true, true], "\(relaxed.checks)")
        #expect(relaxed.sourceBytes == 12288)  // the file rounded up to 4 KiB

        // A real mount point (tmpfs), written to and left as it was.
        let shm = "/dev/shm"
        try #require(try MountTable.read().mount(at: shm) != nil, "needs /dev/shm mounted")
        func probes() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: shm).filter {
                $0.hasPrefix(".muster-probe-\(getpid())")
            }
        }
        let mounted = await Precheck.checkVolume(.init(mountPath: shm, spaceFor: ["\(fixture.directory)/repos"]))
        #expect(mounted.checks.allSatisfy { $0.ok }, "\(mounted.checks)")
        #expect(
            mounted.checks.map(\.name) == [
                "volume /dev/shm is a mount point", "volume /dev/shm writable",
                "volume /dev/shm has space for \(fixture.directory)/repos",
            ])
        #expect(try probes().isEmpty, "probe removed")

        // More than the volume holds: a sparse file counts with its apparent size (as SourceSize measures).
        let free = try #require(VolumeProbe.space(at: shm)).free
        let big = "\(fixture.directory)/big/sparse"
        try FileManager.default.createDirectory(atPath: "\(fixture.directory)/big", withIntermediateDirectories: true)
        let fd = open(big, O_WRONLY | O_CREAT, 0o600)
        try #require(fd >= 0)
        #expect(ftruncate(fd, off_t(free)) == 0)
        close(fd)
        let full = await Precheck.checkVolume(.init(mountPath: shm, spaceFor: ["\(fixture.directory)/big"]))
        let space = try #require(full.checks.last)
        #expect(!space.ok && space.detail.hasPrefix("not enough space: needs"), "\(space.detail)")
        #expect(space.detail.contains("is free"))
        #expect(full.sourceBytes >= free)

        let absent = await Precheck.checkVolume(
            .init(mountPath: shm, spaceFor: ["\(fixture.directory)/nothing-here"]))
        #expect(absent.checks.last?.ok == false)
        #expect(absent.checks.last?.detail.contains("does not exist") == true)
    }

    @Test func spaceArithmetic() {
        let gib: UInt64 = 1 << 30
        #expect(Precheck.spaceVerdict(free: 11 * gib, sourceBytes: 10 * gib).ok)
        #expect(!Precheck.spaceVerdict(free: 11 * gib - 1, sourceBytes: 10 * gib).ok)
        let verdict = Precheck.spaceVerdict(free: 5 * gib, sourceBytes: 10 * gib)
        #expect(
            verdict.detail == "not enough space: needs 11.00 GiB (10.00 GiB + 10% margin) but only 5.00 GiB is free")
        #expect(Precheck.spaceVerdict(free: 0, sourceBytes: 0).ok)
    }

    // MARK: - config and rewrites

    @Test func configExpectationMismatchFailsAndChangesNothing() throws {
        let fixture = try PrecheckFixture()
        defer { fixture.remove() }
        let original = #"{"storage_mode": "postgres", "port": 8080}"#
        let path = try fixture.write("config.json", original)
        let spec = EditConfig.Spec(
            file: path, format: .json, expect: ["storage_mode": .string("sqlite")],
            set: ["storage_mode": .string("postgres"), "/database/url": .string("postgres://db/app")])
        let mismatch = Precheck.checkConfig(spec)
        #expect(!mismatch.ok)
        #expect(
            mismatch.detail.contains(#"storage_mode is "postgres", the profile expects "sqlite""#), "\(mismatch.detail)"
        )
        #expect(try fixture.read(path) == original)
        #expect(!FileManager.default.fileExists(atPath: path + ".pre-cluster"))

        try fixture.write("config.json", #"{"storage_mode": "sqlite"}"#)
        let ok = Precheck.checkConfig(spec)
        #expect(ok.ok && ok.detail.contains("would set /database/url, storage_mode"), "\(ok.detail)")
        #expect(try fixture.read(path) == #"{"storage_mode": "sqlite"}"#)
        #expect(!FileManager.default.fileExists(atPath: path + ".pre-cluster"))

        let absent = Precheck.checkConfig(.init(file: "\(fixture.directory)/none.json", format: .json, set: [:]))
        #expect(!absent.ok)
    }

    @Test func rewriteOfInvalidJSONFailsAndFilesUnderTheVolumeAreSkipped() throws {
        let fixture = try PrecheckFixture()
        defer { fixture.remove() }
        let good = try fixture.write("aliases/a.json", #"{"path": "/srv/app/golden-repos/a.git"}"#)
        let bad = try fixture.write("aliases/b.json", #"{"path": "/srv/app/golden-repos/b.git""#)
        let rewrite = PathPrefixRewrite(from: "/srv/app/golden-repos", to: "/mnt/shared/golden-repos")
        let spec = RewriteJSONPaths.Spec(
            files: ["\(fixture.directory)/aliases/*.json", "/mnt/shared/golden-repos/*/meta.json"], rewrites: [rewrite])
        let checks = Precheck.checkRewrite(spec, volume: "/mnt/shared")
        #expect(checks.count == 2)
        #expect(
            checks[0].ok && checks[0].detail == "skipped: /mnt/shared/golden-repos/*/meta.json is created by the sync")
        #expect(!checks[1].ok && checks[1].detail.contains(bad), "\(checks[1].detail)")
        #expect(try fixture.read(bad) == #"{"path": "/srv/app/golden-repos/b.git""#)
        #expect(try fixture.read(good) == #"{"path": "/srv/app/golden-repos/a.git"}"#)

        try fixture.write("aliases/b.json", #"{"path": "/elsewhere"}"#)
        let passing = Precheck.checkRewrite(spec, volume: "/mnt/shared")
        #expect(passing.allSatisfy { $0.ok }, "\(passing)")
        #expect(passing[1].detail == "2 JSON files parse; 1 values in 1 files would be rewritten")
        #expect(try fixture.read(good) == #"{"path": "/srv/app/golden-repos/a.git"}"#)
        #expect(!FileManager.default.fileExists(atPath: good + ".pre-cluster"))

        // Without a volume, nothing is skipped: the missing files are a failure.
        #expect(Precheck.checkRewrite(spec, volume: nil).map(\.ok) == [false])
    }

    // MARK: - unit

    @Test("unit check when systemd cannot be reached (connect closure that throws)")
    func unitCheckWithoutSystemd() async throws {
        let check = await PrecheckFixture.noSystemd.checkUnit(try UnitName("app.service"))
        #expect(!check.ok && check.name == "unit app.service present")
        #expect(check.detail == "cannot ask systemd: no systemd manager in this test")
    }

    // MARK: - the task

    @Test func everyCheckRunsAndTheFailureListsThemAll() async throws {
        let fixture = try PrecheckFixture()
        defer { fixture.remove() }
        let present = try fixture.write("data/present", "x")
        let spec = Precheck.Spec(
            readable: [present, "\(fixture.directory)/data/absent", "\(fixture.directory)/data"],
            volume: .init(mountPath: fixture.directory, spaceFor: ["\(fixture.directory)/data"]),
            config: .init(file: "\(fixture.directory)/missing.env", format: .env, set: ["MODE": .string("cluster")]))
        await #expect {
            _ = try await PrecheckFixture.noSystemd.run(
                spec: try JSONValue(encoding: spec), progress: TaskProgressReporter { _ in })
        } throws: { error in
            guard let failure = error as? TaskFailure, failure.code == MusterError.Code.verificationFailed.wireName,
                let report = try? failure.details?.decode(Precheck.Report.self)
            else { return false }
            let failed = report.checks.filter { !$0.ok }.map(\.name)
            return !report.ok && report.checks.count == 7
                && failed == [
                    "readable \(fixture.directory)/data/absent", "volume \(fixture.directory) is a mount point",
                    "config \(fixture.directory)/missing.env",
                ]
                && failure.message.hasPrefix(
                    "3 of 7 prechecks failed: readable \(fixture.directory)/data/absent: does not exist; volume ")
                && report.sourceBytes == 4096
        }
    }

    @Test func passingRunReturnsTheChecksAndSourceBytes() async throws {
        let fixture = try PrecheckFixture()
        defer { fixture.remove() }
        let present = try fixture.write("data/present", "x")
        let spec = Precheck.Spec(
            readable: [present],
            volume: .init(
                mountPath: fixture.directory, requireMountPoint: false, spaceFor: ["\(fixture.directory)/data"]))
        let result = try await PrecheckFixture.noSystemd.run(
            spec: try JSONValue(encoding: spec), progress: TaskProgressReporter { _ in })
        let report = try result.decode(Precheck.Report.self)
        #expect(report.ok && report.checks.count == 3 && report.sourceBytes == 4096)
        guard case .object(let object) = result else {
            Issue.record("not an object")
            return
        }
        #expect(Set(object.keys) == ["ok", "checks", "sourceBytes"])
    }

    @Test func malformedSpecIsInvalidInput() async throws {
        await #expect {
            _ = try await PrecheckFixture.noSystemd.run(
                spec: .object(["readable": .string("/not/a/list")]), progress: TaskProgressReporter { _ in })
        } throws: { ($0 as? TaskFailure)?.code == MusterError.Code.invalidInput.wireName }
        await #expect {
            _ = try await PrecheckFixture.noSystemd.run(
                spec: .object(["readable": .array([.string("relative/path")])]), progress: TaskProgressReporter { _ in }
            )
        } throws: { ($0 as? MusterError)?.code == .invalidInput }
        await #expect {
            _ = try await PrecheckFixture.noSystemd.run(
                spec: .object(["unit": .string("no suffix")]), progress: TaskProgressReporter { _ in })
        } throws: { ($0 as? MusterError)?.code == .invalidInput }
    }
}

/// The `unit` check against a real systemd user manager.
@Suite("precheck: unit on a user manager", .serialized, .requiresRoot, .requiresSystemd)
struct PrecheckUnitTests {
    @Test func presentAndMissingUnits() async throws {
        try await UserManager.with { manager in
            let address = manager.busAddress
            let precheck = Precheck(
                connect: { try await SystemdManager.connect(address) }, logger: Logger(label: "test"))
            let present = await precheck.checkUnit(try UnitName("default.target"))
            #expect(present.ok, "\(present.detail)")
            #expect(present.detail.hasPrefix("loaded, "), "\(present.detail)")
            let missing = await precheck.checkUnit(try UnitName("muster-precheck-absent.service"))
            #expect(!missing.ok)
            #expect(missing.detail == "unit muster-precheck-absent.service does not exist on this node")
        }
    }
}

extension MigrationTests {
    /// The `postgres` check: the migration engine's dry run against a real PostgreSQL.
    @Suite("precheck: PostgreSQL target")
    struct PrecheckPostgresTests {
        @Test func unreachableServerFails() async throws {
            let source = try SQLiteFixture()
            try source.exec("CREATE TABLE t (id INTEGER PRIMARY KEY);")
            let port = try PostgresHarness.freePort()
            let check = await PrecheckFixture.noSystemd.checkMigration(
                try Precheck.migration(
                    .init(databases: [source.path], target: "postgres://postgres@127.0.0.1:\(port)/app")))
            #expect(!check.ok && check.name == "postgres 127.0.0.1:\(port)/app schema public")
            #expect(check.detail.contains("cannot connect to PostgreSQL at 127.0.0.1:\(port)/app"), "\(check.detail)")
        }

        @Test func targetTablesMustBeAbsentOrEmptyUnlessReplace() async throws {
            let source = try SQLiteFixture()
            try source.exec(
                """
                CREATE TABLE repositories (id INTEGER PRIMARY KEY, name TEXT);
                INSERT INTO repositories VALUES (1, 'a'), (2, 'b');
                """)
            let target = try TargetDatabase()
            defer { target.dropInBackground() }
            let before = try source.sha256()
            func check(replace: Bool? = nil) async throws -> Precheck.Check {
                await PrecheckFixture.noSystemd.checkMigration(
                    try Precheck.migration(
                        .init(databases: [source.path], target: target.url, schema: "app", replace: replace)))
            }
            let absent = try await check()
            #expect(absent.ok && absent.detail == "reachable; 1 tables: create repositories", "\(absent.detail)")
            #expect(try await target.query("SELECT count(*) FROM pg_namespace WHERE nspname = 'app'") == "0")

            _ = try await target.query("CREATE SCHEMA app; CREATE TABLE app.repositories (id bigint, name text)")
            let empty = try await check()
            #expect(empty.ok && empty.detail.contains("loadExisting repositories"), "\(empty.detail)")

            _ = try await target.query("INSERT INTO app.repositories VALUES (7, 'other')")
            let holding = try await check()
            #expect(!holding.ok)
            #expect(holding.detail.contains("already holds rows"), "\(holding.detail)")
            let replacing = try await check(replace: true)
            #expect(replacing.ok && replacing.detail.contains("replace repositories"), "\(replacing.detail)")
            #expect(try await target.query("SELECT count(*) FROM app.repositories") == "1", "nothing changed")
            #expect(try source.sha256() == before)
        }
    }
}
