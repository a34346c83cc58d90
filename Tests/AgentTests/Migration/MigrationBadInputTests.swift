import Foundation
import GRDBSQLite
import Shared
import TestSupport
import Testing

@testable import Agent

/// Every bad input of issue 4; each checks the source file is byte-identical afterwards (see `migrate`).
extension MigrationTests {
    @Suite("bad input and failures")
    struct MigrationBadInputTests {
        @Test func corruptFileIsRefused() async throws {
            let src = try SQLiteFixture()
            try Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }).write(to: URL(fileURLWithPath: src.path))
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let error = await #expect(throws: MusterError.self) { try await migrate(src, db) }
            #expect(error?.code == .sourceCorrupt)
            #expect(error?.code.exitCode == 1)
        }

        @Test func truncatedDatabaseIsRefused() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
                WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
                  INSERT INTO t SELECT i, printf('%0200d', i) FROM c;
                """)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: src.path))
            try handle.seek(toOffset: 8192)
            try handle.write(contentsOf: Data(repeating: 0xA5, count: 65536))
            try handle.close()
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let error = await #expect(throws: MusterError.self) { try await migrate(src, db) }
            #expect(error?.code == .sourceCorrupt)
        }

        @Test func lockedSourceFailsClearlyAndSnapshotWaitsForTheLock() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                "PRAGMA journal_mode = DELETE; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');")
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            // A writer in the middle of a transaction holding the exclusive lock.
            let writer = try SQLiteFixture.open(src.path)
            try SQLiteFixture.exec(writer, "BEGIN EXCLUSIVE; INSERT INTO t VALUES (2, 'uncommitted');")
            let error = await #expect(throws: MusterError.self) { try await migrate(src, db) }
            #expect(error?.code == .sourceLocked)
            #expect(error?.hint?.contains("--snapshot") == true)
            #expect(error?.hint?.contains("stop the service") == true)

            // With --snapshot the backup retries until the writer commits, then migrates a consistent copy.
            let box = ConnectionBox(writer)
            let release = Thread {
                Thread.sleep(forTimeInterval: 1.0)
                try? SQLiteFixture.exec(box.handle, "ROLLBACK;")
                sqlite3_close_v2(box.handle)
            }
            release.start()
            let report = try await migrate(src, db, snapshot: true)
            #expect(report.exitCode == 0, "\(report.renderTable())")
            #expect(report.sources.first?.snapshot == true)
            #expect(try await db.query("SELECT count(*) FROM t") == "1")
        }

        @Test func badValuesBecomeErrorRowsWithTheirKeys() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, doc TEXT, flag BOOLEAN);
                INSERT INTO t VALUES (1, 1, 'fine', '{"ok": true}', 1);
                INSERT INTO t VALUES (2, 2, CAST(x'61006263' AS TEXT), '{}', 0);
                INSERT INTO t VALUES (3, 3, CAST(x'66ff6f' AS TEXT), '{}', 0);
                INSERT INTO t VALUES (4, 'not a number', 'mixed storage', '{}', 0);
                INSERT INTO t VALUES (5, 5, 'x', '{"unterminated": ', 0);
                INSERT INTO t VALUES (6, 6.5, 'real in integer column', '{}', 0);
                INSERT INTO t VALUES (7, 7, 'bad boolean', '{}', 2);
                INSERT INTO t VALUES (8, 8, 'also fine', 'null', NULL);
                """)
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let report = try await migrate(src, db, casts: ["t.doc:jsonb"])
            #expect(report.exitCode == 1)
            #expect(report.tables[0].rowsRead == 8)
            #expect(report.tables[0].rowsWritten == 2)
            #expect(report.tables[0].errorRows == 6)
            // The good rows are still verified.
            #expect(report.tables[0].verified == true)
            let byKey = Dictionary(uniqueKeysWithValues: report.errorRows.map { ($0.key, $0) })
            #expect(byKey["2"]?.reason.contains("NUL") == true)
            #expect(byKey["2"]?.value == "a\\0bc")
            #expect(byKey["3"]?.reason.contains("UTF-8") == true)
            #expect(byKey["3"]?.value == "f\\xffo")
            #expect(byKey["4"]?.column == "n" && byKey["4"]?.reason.contains("TEXT") == true)
            #expect(byKey["5"]?.column == "doc" && byKey["5"]?.reason.contains("JSON") == true)
            #expect(byKey["6"]?.reason.contains("REAL") == true)
            #expect(byKey["7"]?.column == "flag")
            #expect(try await db.query("SELECT string_agg(id::text, ',' ORDER BY id) FROM t") == "1,8")
            #expect(report.renderTable().contains("error rows"))
        }

        @Test func unreachableTargetIsAConnectionError() async throws {
            let src = try SQLiteFixture()
            try src.exec("CREATE TABLE t (id INTEGER PRIMARY KEY);")
            let port = try PostgresHarness.freePort()
            let spec = MigrationSpec(databases: [src.path], target: "postgres://postgres@127.0.0.1:\(port)/nowhere")
            let before = try src.sha256()
            let error = await #expect(throws: MusterError.self) { try await MigrationEngine(spec: spec).run() }
            #expect(error?.code == .connectionFailed)
            #expect(error?.code.exitCode == 2)
            #expect(try src.sha256() == before)
            #expect(await MigrateSQLiteCommand.execute(spec: spec, json: true) == 2)
        }

        @Test func usageErrorsExitWithTwo() async throws {
            let src = try SQLiteFixture()
            try src.exec("CREATE TABLE t (id INTEGER PRIMARY KEY);")
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            #expect(throws: MusterError.self) { try CastRule(parsing: "nodot:boolean") }
            let spec = MigrationSpec(databases: [src.path], target: db.url, tables: ["missing"])
            #expect(await MigrateSQLiteCommand.execute(spec: spec, json: false) == 2)
            let badCast = MigrationSpec(databases: [src.path], target: db.url, casts: [try CastRule(parsing: "t.nope:jsonb")])
            #expect(await MigrateSQLiteCommand.execute(spec: badCast, json: false) == 2)
            let noFile = MigrationSpec(databases: [src.directory + "/absent.db"], target: db.url)
            #expect(await MigrateSQLiteCommand.execute(spec: noFile, json: false) == 2)
        }

        @Test func targetTableWithOtherColumnsIsRefusedUnlessReplace() async throws {
            let src = try SQLiteFixture()
            try src.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'new');")
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            _ = try await db.query("CREATE TABLE t (id bigint, other text); INSERT INTO t VALUES (9, 'keep me')")
            let error = await #expect(throws: MusterError.self) { try await migrate(src, db) }
            #expect(error?.code == .conflict)
            #expect(error?.message.contains("other columns") == true)
            #expect(error?.hint?.contains("--replace") == true)
            #expect(try await db.query("SELECT other FROM t") == "keep me")

            // Same columns but rows we did not load: refused too.
            _ = try await db.query("DROP TABLE t; CREATE TABLE t (id bigint, v text); INSERT INTO t VALUES (9, 'keep me')")
            let again = await #expect(throws: MusterError.self) { try await migrate(src, db) }
            #expect(again?.message.contains("did not load") == true)

            let report = try await migrate(src, db, replace: true)
            #expect(report.exitCode == 0)
            #expect(report.tables[0].action == .replace)
            #expect(try await db.query("SELECT v FROM t") == "new")
        }
    }
}

/// Hands the writer's connection to the thread that ends its transaction.
// @unchecked: the test thread stops using the handle before the releasing thread starts.
final class ConnectionBox: @unchecked Sendable {
    let handle: OpaquePointer
    init(_ handle: OpaquePointer) { self.handle = handle }
}
