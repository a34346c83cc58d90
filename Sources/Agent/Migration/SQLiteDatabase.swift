import Foundation
import GRDBSQLite
import Shared

/// A read-only SQLite connection over the C API (GRDB's `GRDBSQLite` module).
///
/// The migration reads millions of rows; going through `sqlite3_column_*` directly avoids a `Row` and a
/// `DatabaseValue` per value. The connection is opened with `SQLITE_OPEN_READONLY`, never creates or copies the
/// file, and maps SQLite's lock and corruption results to ``MusterError`` codes the operator can act on.
// @unchecked: a connection is owned by one task at a time (schema reader, or one table copier); SQLite is opened
// NOMUTEX and is never used from two threads at once.
final class SQLiteDatabase: @unchecked Sendable {
    let path: String
    let handle: OpaquePointer

    /// Opens `path` read-only.
    /// - Parameter busyTimeout: how long to wait for a writer's lock before failing with `.sourceLocked`.
    init(path: String, busyTimeout: Duration = .seconds(2)) throws(MusterError) {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw MusterError(.usage, "SQLite source \(path) does not exist")
        }
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw Self.error(code: rc, message: msg, path: path)
        }
        self.handle = db
        let ms = busyTimeout.components.seconds * 1000 + busyTimeout.components.attoseconds / 1_000_000_000_000_000
        sqlite3_busy_timeout(db, Int32(clamping: ms))
    }

    deinit { sqlite3_close_v2(handle) }

    /// Prepares a statement; the caller finalizes it through ``SQLiteStatement``'s `deinit`.
    func prepare(_ sql: String) throws(MusterError) -> SQLiteStatement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else {
            throw Self.error(code: rc, message: String(cString: sqlite3_errmsg(handle)), path: path)
        }
        return SQLiteStatement(stmt, database: self)
    }

    /// Runs a small query and returns every row as ``SQLiteValue``s (schema discovery only).
    func rows(_ sql: String) throws(MusterError) -> [[SQLiteValue]] {
        let stmt = try prepare(sql)
        var out: [[SQLiteValue]] = []
        while try stmt.step() {
            out.append((0..<stmt.columnCount).map { stmt.value(at: $0) })
        }
        return out
    }

    /// Maps an SQLite result code to the operator-facing error.
    static func error(code: Int32, message: String, path: String) -> MusterError {
        switch code & 0xFF {
        case SQLITE_BUSY, SQLITE_LOCKED:
            return MusterError(
                .sourceLocked, "SQLite source \(path) is locked by another process (\(message))",
                hint: "stop the service that writes to it first, or use --snapshot to migrate from an online backup copy")
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return MusterError(
                .sourceCorrupt, "SQLite source \(path) is not a valid database or is corrupt (\(message))",
                hint: "check the file with `sqlite3 \(path) 'PRAGMA integrity_check'`")
        case SQLITE_CANTOPEN, SQLITE_PERM, SQLITE_AUTH:
            return MusterError(.io, "cannot open SQLite source \(path) (\(message))")
        default:
            return MusterError(.io, "SQLite error on \(path): \(message) (code \(code))")
        }
    }
}

/// One value of a small schema query.
enum SQLiteValue: Equatable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    var string: String? {
        switch self {
        case .text(let s): s
        case .integer(let i): String(i)
        case .real(let d): String(d)
        default: nil
        }
    }

    var int: Int64? {
        if case .integer(let i) = self { return i }
        return nil
    }
}

/// A prepared statement, finalized on `deinit`.
// @unchecked: follows its ``SQLiteDatabase`` (one owner at a time).
final class SQLiteStatement: @unchecked Sendable {
    let handle: OpaquePointer
    let database: SQLiteDatabase

    init(_ handle: OpaquePointer, database: SQLiteDatabase) {
        self.handle = handle
        self.database = database
    }

    deinit { sqlite3_finalize(handle) }

    var columnCount: Int32 { sqlite3_column_count(handle) }

    /// Advances to the next row; `false` at the end.
    @inline(__always)
    func step() throws(MusterError) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw SQLiteDatabase.error(
            code: rc, message: String(cString: sqlite3_errmsg(database.handle)), path: database.path)
    }

    func value(at i: Int32) -> SQLiteValue {
        switch sqlite3_column_type(handle, i) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(handle, i))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(handle, i))
        case SQLITE_TEXT:
            let n = Int(sqlite3_column_bytes(handle, i))
            guard let p = sqlite3_column_text(handle, i) else { return .text("") }
            return .text(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self))
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(handle, i))
            guard let p = sqlite3_column_blob(handle, i) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }
}

extension SQLiteDatabase {
    /// Takes a consistent online backup of `source` into `destination` with the SQLite backup API.
    ///
    /// Copies in steps of 1024 pages; when a writer holds a lock it retries for up to `timeout`, so a running
    /// service only ever waits for one step. The corresponding C functions are `sqlite3_backup_init`,
    /// `sqlite3_backup_step` and `sqlite3_backup_finish`.
    ///
    /// - Parameter standalone: switch the copy to rollback-journal mode afterwards (`PRAGMA journal_mode=DELETE`),
    ///   so a copy of a WAL database is one self-contained file that needs no `-wal`/`-shm` beside it.
    static func backup(
        source: String, destination: String, timeout: Duration = .seconds(60), standalone: Bool = false
    ) throws(MusterError) {
        let src = try SQLiteDatabase(path: source)
        var dst: OpaquePointer?
        let rc = sqlite3_open_v2(destination, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil)
        guard rc == SQLITE_OK, let dst else {
            if let dst { sqlite3_close_v2(dst) }
            throw MusterError(.io, "cannot create snapshot file \(destination)")
        }
        defer { sqlite3_close_v2(dst) }
        guard let backup = sqlite3_backup_init(dst, "main", src.handle, "main") else {
            throw MusterError(.io, "cannot start online backup of \(source): \(String(cString: sqlite3_errmsg(dst)))")
        }
        let deadline = ContinuousClock.now + timeout
        var result: Int32 = SQLITE_OK
        while true {
            result = sqlite3_backup_step(backup, 1024)
            if result == SQLITE_DONE { break }
            if result == SQLITE_OK { continue }
            if result == SQLITE_BUSY || result == SQLITE_LOCKED, ContinuousClock.now < deadline {
                usleep(50_000)
                continue
            }
            break
        }
        sqlite3_backup_finish(backup)
        if result != SQLITE_DONE {
            throw error(code: result, message: String(cString: sqlite3_errstr(result)), path: source)
        }
        if standalone {
            let rc = sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", nil, nil, nil)
            guard rc == SQLITE_OK else {
                throw MusterError(
                    .io,
                    "cannot switch the copy \(destination) to rollback-journal mode: "
                        + String(cString: sqlite3_errmsg(dst)))
            }
        }
    }
}
