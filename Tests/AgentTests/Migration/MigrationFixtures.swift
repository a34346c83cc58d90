import Foundation
import GRDBSQLite
import Shared
import TestSupport
import Testing

@testable import Agent

/// A throwaway SQLite file written through the C API (the engine itself only ever reads).
final class SQLiteFixture {
    let directory: String
    let path: String

    init(_ name: String = "source.db") throws {
        directory = NSTemporaryDirectory() + "muster-migtest-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/" + name
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Runs SQL (several statements allowed) on a read-write connection that is closed afterwards.
    func exec(_ sql: String) throws {
        let db = try SQLiteFixture.open(path)
        defer { sqlite3_close_v2(db) }
        try SQLiteFixture.exec(db, sql)
    }

    static func open(_ path: String) throws -> OpaquePointer {
        var db: OpaquePointer?
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil) == SQLITE_OK, let db else {
            throw FixtureError("cannot open \(path)")
        }
        return db
    }

    static func exec(_ db: OpaquePointer, _ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &err) != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? "?"
            sqlite3_free(err)
            throw FixtureError("sqlite: \(msg) in \(sql.prefix(200))")
        }
    }

    /// SHA-256 of the file, to prove the engine never modified it.
    func sha256() throws -> String { try MigrationEngine.fingerprint(path).sha256 }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// All migration suites, run one test at a time: the harness's `psql` calls block a thread, and a `DROP DATABASE`
/// waits for every backend, including one in the middle of a COPY from another test.
@Suite("MigrationTests", .serialized) enum MigrationTests {}

/// Runs blocking work (psql, pg_ctl) on its own thread so the cooperative pool keeps serving the engine.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// A fresh target database per test.
struct TargetDatabase: Sendable {
    let name: String
    let url: String
    let server: PostgresHarness.Server

    init() throws {
        server = try PostgresHarness.server()
        (name, url) = try PostgresHarness.makeDatabase(prefix: "mig")
    }

    func query(_ sql: String) async throws -> String {
        let (server, name) = (server, name)
        return try await offPool { try PostgresHarness.psql(server, database: name, sql: sql) }
    }

    /// Drops the database from a thread of its own (cleanup must not block the cooperative pool).
    func dropInBackground() {
        let name = name
        Thread { PostgresHarness.dropDatabase(name) }.start()
    }
}

/// Runs the engine and checks the source was left byte-identical.
func migrate(
    _ fixture: SQLiteFixture, _ target: TargetDatabase, tables: [String]? = nil, casts: [String] = [],
    replace: Bool = false, dryRun: Bool = false, snapshot: Bool = false, schema: String = "public", jobs: Int = 2,
    chunkRows: Int? = nil
) async throws -> MigrationReport {
    let before = try fixture.sha256()
    defer { #expect((try? fixture.sha256()) == before, "source must be byte-identical") }
    let spec = MigrationSpec(
        databases: [fixture.path], target: target.url, schema: schema, tables: tables,
        casts: try casts.map { try CastRule(parsing: $0) }, jobs: jobs, replace: replace, dryRun: dryRun,
        snapshot: snapshot, chunkRows: chunkRows)
    return try await MigrationEngine(spec: spec).run()
}
