import Foundation
import GRDBSQLite
import Logging
import Shared
import Testing

@testable import Agent

#if canImport(Glibc)
    import Glibc
#endif

@Suite("backup: online SQLite copies and files into the state directory, reused on a re-run")
struct BackupTests {
    let state: String
    let sources: String

    init() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(
            "muster-backup-\(UUID().uuidString.prefix(8))"
        )
        .path
        state = base + "/state"
        sources = base + "/srv"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: sources, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: (state as NSString).deletingLastPathComponent) }

    func sha256(_ path: String) throws -> String { try Backup.digest(path).sha256 }

    static func mode(_ path: String) -> mode_t {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o7777 : 0
    }

    @Test func walDatabaseAndConfigAreBackedUpThenReused() async throws {
        defer { remove() }
        let database = "\(sources)/app.db"
        // A writer that stays open: the rows live in the WAL, not yet checkpointed into the main file.
        let writer = try SQLiteFixture.open(database)
        defer { sqlite3_close_v2(writer) }
        try SQLiteFixture.exec(
            writer,
            """
            PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
            CREATE TABLE repositories (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
            INSERT INTO repositories SELECT i, 'repo-' || i FROM n;
            """)
        #expect(FileManager.default.fileExists(atPath: database + "-wal"))
        let config = "\(sources)/config.json"
        try Data(#"{"storage_mode": "sqlite"}"#.utf8).write(to: URL(fileURLWithPath: config))
        chmod(config, 0o640)
        let before = (try sha256(database), try sha256(database + "-wal"), try sha256(config))

        let spec = Backup.Spec(name: "seed-1", sqlite: [database], files: [config])
        let result = try await Backup(stateDirectory: state).run(
            spec: try JSONValue(encoding: spec), progress: TaskProgressReporter { _ in })
        let report = try result.decode(Backup.Report.self)
        #expect(
            (try sha256(database), try sha256(database + "-wal"), try sha256(config)) == before, "sources unchanged")

        let directory = "\(state)/backups/seed-1"
        #expect(report.directory == directory)
        #expect(Self.mode("\(state)/backups") == 0o700 && Self.mode(directory) == 0o700)
        #expect(report.items.map(\.kind) == [.sqlite, .file])
        #expect(report.items.allSatisfy { !$0.reused })
        #expect(report.items.map(\.backup) == ["\(directory)/files\(database)", "\(directory)/files\(config)"])
        #expect(report.bytes == report.items.reduce(0) { $0 + $1.bytes })
        for item in report.items {
            #expect(try sha256(item.backup) == item.sha256)
            #expect(try Backup.digest(item.backup).size == item.bytes)
        }
        guard case .object(let object) = result, case .array(let items)? = object["items"],
            case .object(let item)? = items.first
        else {
            Issue.record("not a report: \(result)")
            return
        }
        #expect(Set(object.keys) == ["directory", "items", "bytes"])
        #expect(Set(item.keys) == ["source", "backup", "bytes", "sha256", "kind", "reused"])

        // The SQLite copy: one self-contained file with every row, WAL content included.
        let copy = try SQLiteDatabase(path: report.items[0].backup)
        #expect(try copy.rows("PRAGMA integrity_check") == [[.text("ok")]])
        #expect(try copy.rows("SELECT count(*), max(name) FROM repositories") == [[.integer(500), .text("repo-99")]])
        #expect(try copy.rows("PRAGMA journal_mode") == [[.text("delete")]])
        #expect(!FileManager.default.fileExists(atPath: report.items[0].backup + "-wal"))

        // The plain file: same bytes, same mode.
        #expect(try sha256(report.items[1].backup) == before.2 && report.items[1].sha256 == before.2)
        #expect(Self.mode(report.items[1].backup) == 0o640)

        let manifest = try JSONDecoder().decode(
            [Backup.Entry].self, from: try Data(contentsOf: URL(fileURLWithPath: "\(directory)/manifest.json")))
        #expect(manifest.map(\.source) == [database, config])
        #expect(manifest.map(\.sha256) == report.items.map(\.sha256))
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == ["files", "manifest.json"],
            "no temporary files left")

        // Again: the backups are kept, not copied again, even though the source moved on.
        try SQLiteFixture.exec(writer, "INSERT INTO repositories VALUES (501, 'late');")
        let inode = try FileManager.default.attributesOfItem(atPath: report.items[0].backup)[.systemFileNumber]
        let again = try Backup(stateDirectory: state).apply(spec)
        #expect(again.items.allSatisfy { $0.reused })
        #expect(again.items.map(\.sha256) == report.items.map(\.sha256))
        #expect(
            try FileManager.default.attributesOfItem(atPath: report.items[0].backup)[.systemFileNumber] as? Int
                == inode as? Int)

        // A damaged backup is not trusted: copied again.
        try Data("tampered".utf8).write(to: URL(fileURLWithPath: report.items[1].backup))
        let repaired = try Backup(stateDirectory: state).apply(spec)
        #expect(repaired.items.map(\.reused) == [true, false])
        #expect(try sha256(report.items[1].backup) == before.2)
    }

    @Test func cleanlyClosedWALDatabaseIsBackedUpAndPassesThePrecheck() async throws {
        defer { remove() }
        let database = "\(sources)/closed.db"
        let writer = try SQLiteFixture.open(database)
        try SQLiteFixture.exec(
            writer, "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        sqlite3_close_v2(writer)
        #expect(!FileManager.default.fileExists(atPath: database + "-wal"), "checkpointed on close")
        let before = try sha256(database)
        let readable = Precheck.checkReadable(database)
        #expect(readable.ok, "\(readable.detail)")
        let report = try Backup(stateDirectory: state).apply(.init(name: "closed", sqlite: [database]))
        let copy = try SQLiteDatabase(path: report.items[0].backup)
        #expect(try copy.rows("SELECT count(*) FROM t") == [[.integer(2)]])
        #expect(try sha256(database) == before)
    }

    @Test func theAgentRegistersPrecheckAndBackupWithItsStateDirectory() throws {
        defer { remove() }
        let runner = try AgentServices.makeTaskRunner(
            configuration: AgentConfiguration(stateDirectory: state), logger: Logger(label: "test"))
        #expect(runner.handlers[.precheck] is Precheck)
        let backup = try #require(runner.handlers[.backup] as? Backup)
        #expect(backup.stateDirectory == state)
    }

    @Test func badNamesAreRefused() throws {
        defer { remove() }
        let config = "\(sources)/config.json"
        try Data("{}".utf8).write(to: URL(fileURLWithPath: config))
        for name in ["", "../escape", ".hidden", "a/b", "-dash", "x y", String(repeating: "a", count: 129), ".."] {
            #expect(throws: MusterError.self, "\(name)") {
                try Backup(stateDirectory: state).apply(.init(name: name, files: [config]))
            }
        }
        #expect(throws: MusterError.self) {
            try Backup(stateDirectory: state).apply(.init(name: "ok", files: ["relative/config.json"]))
        }
        #expect(throws: MusterError.self) {
            try Backup(stateDirectory: state).apply(.init(name: "ok", files: ["\(sources)/../srv/config.json"]))
        }
        #expect(throws: MusterError.self) { try Backup(stateDirectory: state).apply(.init(name: "ok")) }
        #expect(!FileManager.default.fileExists(atPath: "\(state)/backups"))
        _ = try Backup(stateDirectory: state).apply(.init(name: String(repeating: "a", count: 128), files: [config]))
    }

    @Test func missingSourceIsRefusedWithNothingCreated() throws {
        defer { remove() }
        let config = "\(sources)/config.json"
        try Data("{}".utf8).write(to: URL(fileURLWithPath: config))
        let absent = "\(sources)/db/absent.db"
        let error = #expect(throws: MusterError.self) {
            try Backup(stateDirectory: state).apply(.init(name: "seed-2", sqlite: [absent], files: [config]))
        }
        #expect(error?.code == .notFound)
        #expect(error?.message.contains(absent) == true)
        #expect(!FileManager.default.fileExists(atPath: "\(state)/backups"))
    }

    @Test func corruptSQLiteSourceFailsWithoutAPartialBackup() throws {
        defer { remove() }
        let fake = "\(sources)/fake.db"
        try Data("not a database at all, just some text that is long enough".utf8).write(
            to: URL(fileURLWithPath: fake))
        #expect(throws: MusterError.self) {
            try Backup(stateDirectory: state).apply(.init(name: "seed-3", sqlite: [fake]))
        }
        let directory = "\(state)/backups/seed-3"
        let left = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        #expect(left.allSatisfy { !$0.hasPrefix(".tmp-") && $0 != "manifest.json" }, "\(left)")
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/files\(fake)"))
    }
}
