import Foundation
import Logging
import Shared
import Synchronization
import Testing

@testable import Agent

extension MigrationTests {
    /// The `migrateSQLite` task handler: the same engine, a task spec in, progress out, the report as result.
    @Suite("migrateSQLite task")
    struct MigrateSQLiteTaskTests {
        final class Collected: Sendable {
            let updates = Mutex<[JSONValue]>([])
            var reporter: TaskProgressReporter {
                TaskProgressReporter { update in self.updates.withLock { $0.append(update) } }
            }
        }

        @Test func migratesVerifiesAndReportsProgressPerTable() async throws {
            let fixture = try SQLiteFixture()
            try fixture.exec(
                """
                CREATE TABLE repositories (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, size REAL);
                CREATE TABLE commits (id INTEGER PRIMARY KEY, repository_id INTEGER REFERENCES repositories(id),
                    message TEXT, payload JSON);
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
                INSERT INTO repositories SELECT i, 'repo-' || i, i * 1.5 FROM n;
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
                INSERT INTO commits SELECT i, 1 + i % 300, 'message ' || i, '{"n": ' || i || '}' FROM n;
                """)
            let target = try TargetDatabase()
            defer { target.dropInBackground() }
            let before = try fixture.sha256()
            let collected = Collected()
            let spec = try JSONValue(
                encoding: MigrateSQLiteTask.Spec(
                    databases: [fixture.path], target: target.url, schema: "app", tables: nil,
                    casts: ["commits.payload:jsonb"], jobs: 2, replace: nil, dryRun: nil, snapshot: nil))
            let result = try await MigrateSQLiteTask(logger: Logger(label: "test")).run(
                spec: spec, progress: collected.reporter)
            #expect(try fixture.sha256() == before)

            guard case .object(let report) = result, case .array(let tables)? = report["tables"] else {
                Issue.record("not a report: \(result)")
                return
            }
            #expect(tables.count == 2)
            for case .object(let table) in tables {
                #expect(table["verified"] == .bool(true), "\(table)")
            }
            #expect(try await target.query("SELECT count(*) FROM app.commits") == "5000")
            #expect(try await target.query("SELECT pg_typeof(payload)::text FROM app.commits LIMIT 1") == "jsonb")
            // Every table reported its last update (rowsDone == rowsTotal).
            let finals = collected.updates.withLock { $0 }.compactMap { update -> String? in
                guard case .object(let fields) = update, fields["rowsDone"] == fields["rowsTotal"],
                    case .string(let table)? = fields["table"]
                else { return nil }
                return table
            }
            #expect(Set(finals).isSuperset(of: ["repositories", "commits"]), "\(collected.updates.withLock { $0 })")

            // A second run is safe: verified tables are skipped.
            let again = try await MigrateSQLiteTask(logger: Logger(label: "test")).run(
                spec: spec, progress: Collected().reporter)
            guard case .object(let second) = again, case .array(let secondTables)? = second["tables"] else {
                Issue.record("not a report: \(again)")
                return
            }
            for case .object(let table) in secondTables {
                #expect(table["action"] == .string("skip"), "\(table)")
            }
        }

        @Test func errorRowsFailTheTaskWithTheReportInTheDetails() async throws {
            let fixture = try SQLiteFixture()
            try fixture.exec(
                """
                CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);
                INSERT INTO t VALUES (1, 5), (2, 'not a number');
                """)
            let target = try TargetDatabase()
            defer { target.dropInBackground() }
            let spec = try JSONValue(
                encoding: MigrateSQLiteTask.Spec(
                    databases: [fixture.path], target: target.url, schema: nil, tables: nil, casts: nil, jobs: 1,
                    replace: nil, dryRun: nil, snapshot: nil))
            await #expect {
                _ = try await MigrateSQLiteTask(logger: Logger(label: "test")).run(
                    spec: spec, progress: Collected().reporter)
            } throws: { error in
                guard let failure = error as? TaskFailure else { return false }
                return failure.code == MusterError.Code.verificationFailed.wireName
                    && failure.message.contains("1 error rows") && failure.details != nil
            }
        }

        @Test func aSpecWithoutTargetIsRefused() async throws {
            let spec = try JSONValue(
                encoding: MigrateSQLiteTask.Spec(
                    databases: ["/tmp/x.db"], target: nil, schema: nil, tables: nil, casts: nil, jobs: nil,
                    replace: nil, dryRun: nil, snapshot: nil))
            await #expect {
                _ = try await MigrateSQLiteTask(logger: Logger(label: "test")).run(
                    spec: spec, progress: Collected().reporter)
            } throws: { ($0 as? MusterError)?.message.hasPrefix("target:") == true }
        }
    }
}
