import Crypto
import Foundation
import GRDBSQLite
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Shared
import Synchronization

/// A source row that was not copied, with the reason.
struct ErrorRow: Sendable, Codable, Equatable {
    var table: String
    /// The primary key (or rowid) of the row, rendered as text.
    var key: String
    var column: String
    var value: String
    var reason: String
}

/// Progress of one table, reported after every batch.
struct TableProgress: Sendable {
    var table: String
    var rowsDone: Int64
    var rowsTotal: Int64
    var bytes: Int64
    var seconds: Double
}

/// Streams one SQLite table into PostgreSQL with `COPY … FROM STDIN` (text format).
///
/// Reading and encoding happen on a thread pool in batches of about 1 MiB while the previous batch is being
/// sent, so at most two batches per table are in memory whatever the table's size.
struct TableCopier {
    struct Result: Sendable {
        var rowsRead: Int64 = 0
        var errorCount: Int64 = 0
        var errorRows: [ErrorRow] = []
        var bytes: Int64 = 0
        var checksum = TableChecksum.zero

        /// The chunks of one table, in key order, as one result.
        static func merging(_ parts: [Result]) -> Result {
            var out = Result()
            for p in parts {
                out.rowsRead += p.rowsRead
                out.errorCount += p.errorCount
                out.errorRows += p.errorRows.prefix(max(0, TableCopier.maxErrorRowsKept - out.errorRows.count))
                out.bytes += p.bytes
                out.checksum.rows += p.checksum.rows
                out.checksum.sum += p.checksum.sum
            }
            return out
        }
    }

    static let batchBytes = 1 << 20
    static let maxErrorRowsKept = 1000

    let plan: TablePlan
    let readPath: String
    /// Only rows whose integer primary key lies in this range (a chunk of a large table); `nil`: the whole table.
    var range: ClosedRange<Int64>? = nil
    let threadPool: NIOThreadPool
    let logger: Logger
    let progress: @Sendable (TableProgress) -> Void

    /// Copies the table inside one transaction: either every good row is committed or none is.
    func run(connection: PostgresConnection) async throws -> Result {
        let reader = try BatchReader(plan: plan, readPath: readPath, range: range)
        let started = ContinuousClock.now
        try await connection.run("BEGIN", logger: logger)
        do {
            // COPY quotes the table name itself ("name"); passing `schema"."table` with inner quotes doubled yields
            // the qualified, correctly quoted `"schema"."table"`.
            let copyTable = plan.schema.replacingOccurrences(of: "\"", with: "\"\"") + "\".\""
                + plan.name.replacingOccurrences(of: "\"", with: "\"\"")
            let copyColumns = plan.columns.map { $0.name.replacingOccurrences(of: "\"", with: "\"\"") }
            let (pool, plan, progress, logger) = (threadPool, plan, progress, logger)
            try await Self.untilClosed(connection) {
            try await connection.copyFrom(table: copyTable, columns: copyColumns, logger: logger) { writer in
                var batch = try await pool.runIfActive { try reader.next() }
                while true {
                    let current = batch
                    if current.done && current.buffer.readableBytes == 0 { break }
                    async let following: BatchReader.Batch? =
                        current.done ? nil : pool.runIfActive { try reader.next() }
                    if current.buffer.readableBytes > 0 { try await writer.write(current.buffer) }
                    let snapshot = reader.counters
                    progress(
                        TableProgress(
                            table: plan.name, rowsDone: snapshot.rows, rowsTotal: plan.table.rowCount,
                            bytes: snapshot.bytes, seconds: (ContinuousClock.now - started).seconds))
                    guard let next = try await following else { break }
                    batch = next
                }
            }
            }
            try await connection.run("COMMIT", logger: logger)
        } catch {
            if !connection.isClosed { try? await connection.run("ROLLBACK", logger: logger) }
            throw error
        }
        return reader.result
    }
}

extension TableCopier {
    /// The connection closed while a COPY write was pending.
    struct ConnectionClosedDuringCopy: Error, CustomStringConvertible {
        var description: String { "the connection to PostgreSQL closed during COPY" }
    }

    /// Runs `body` (a COPY on `connection`), but fails as soon as the connection closes.
    ///
    /// postgres-nio 1.33.2 can leave a COPY suspended forever when the server goes away mid-copy: a write waiting
    /// for the channel to become writable never has its backpressure promise failed, and the `CopyFail` sent on
    /// the way out waits for a reply that never comes. So the COPY runs in a task of its own that we stop waiting
    /// for when the channel's close future fires; that task is cancelled and, at worst, stays suspended (holding
    /// one batch) until the process exits.
    static func untilClosed<T: Sendable>(
        _ connection: PostgresConnection, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let once = Once()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let task = Task {
                do {
                    let value = try await body()
                    if once.claim() { continuation.resume(returning: value) }
                } catch {
                    if once.claim() { continuation.resume(throwing: error) }
                }
            }
            connection.closeFuture.whenComplete { _ in
                if once.claim() { continuation.resume(throwing: ConnectionClosedDuringCopy()) }
                task.cancel()
            }
        }
    }

    /// True for the first caller only.
    final class Once: Sendable {
        private let done = Mutex(false)
        func claim() -> Bool {
            done.withLock { d in
                defer { d = true }
                return !d
            }
        }
    }
}

/// Reads and encodes batches of one table. Used by one copier task; each call runs on a pool thread, one at a
/// time (the next call starts only after the previous one returned).
// @unchecked: the SQLite statement and encoder state are only touched by the single in-flight `next()` call.
final class BatchReader: @unchecked Sendable {
    struct Batch: Sendable {
        var buffer: ByteBuffer
        var done: Bool
    }

    private let plan: TablePlan
    private let db: SQLiteDatabase
    private let stmt: SQLiteStatement
    private var encoder: RowEncoder
    private let keyIndexes: [Int]
    private(set) var result = TableCopier.Result()
    private var finished = false
    private let allocator = ByteBufferAllocator()
    private let countersLock = NSLock()
    private var _counters: (rows: Int64, bytes: Int64) = (0, 0)

    var counters: (rows: Int64, bytes: Int64) {
        countersLock.lock()
        defer { countersLock.unlock() }
        return _counters
    }

    init(plan: TablePlan, readPath: String, range: ClosedRange<Int64>? = nil) throws(MusterError) {
        self.plan = plan
        db = try SQLiteDatabase(path: readPath)
        if let range, let key = plan.identityColumn {
            stmt = try db.prepare(
                plan.selectSQL + " WHERE \(quoteSQLite(key.name)) BETWEEN \(range.lowerBound) AND \(range.upperBound)")
        } else {
            stmt = try db.prepare(plan.selectSQL)
        }
        encoder = RowEncoder(columns: plan.columns)
        keyIndexes = plan.primaryKey.compactMap { k in plan.columns.firstIndex { $0.name == k } }
    }

    /// Encodes rows until the batch holds about ``TableCopier/batchBytes``.
    func next() throws(MusterError) -> Batch {
        var buffer = allocator.buffer(capacity: TableCopier.batchBytes + 64 * 1024)
        if finished { return Batch(buffer: buffer, done: true) }
        let handle = stmt.handle
        // The per-row state lives in locals for the batch: a stored property of a class is checked for exclusive
        // access at run time on every mutation, which costs more than the rest of a small row's bookkeeping.
        var encoder = self.encoder
        var checksum = result.checksum
        var rowsRead = result.rowsRead
        defer {
            self.encoder = encoder
            result.checksum = checksum
            result.rowsRead = rowsRead
        }
        while buffer.readableBytes < TableCopier.batchBytes {
            guard try stmt.step() else {
                finished = true
                break
            }
            rowsRead += 1
            switch encoder.encode(handle, into: &buffer) {
            case .row(let hash):
                checksum.add(hash)
            case .problem(let problem):
                result.rowsRead = rowsRead
                result.errorCount += 1
                if result.errorRows.count < TableCopier.maxErrorRowsKept {
                    result.errorRows.append(errorRow(problem))
                }
            }
        }
        result.rowsRead = rowsRead
        result.checksum = checksum
        result.bytes += Int64(buffer.readableBytes)
        countersLock.lock()
        _counters = (result.rowsRead, result.bytes)
        countersLock.unlock()
        return Batch(buffer: buffer, done: finished)
    }

    private func errorRow(_ problem: RowProblem) -> ErrorRow {
        let key: String
        if keyIndexes.isEmpty {
            key = "row #\(result.rowsRead) in scan order (no primary key)"
        } else {
            key = keyIndexes.map { Self.preview(stmt.value(at: Int32($0))) }.joined(separator: ", ")
        }
        return ErrorRow(
            table: plan.name, key: key, column: plan.columns[problem.column].name,
            value: Self.preview(stmt.value(at: Int32(problem.column)), raw: stmt, index: Int32(problem.column)),
            reason: problem.reason)
    }

    /// A printable, bounded rendering of a value for the report.
    static func preview(_ value: SQLiteValue, raw: SQLiteStatement? = nil, index: Int32 = 0) -> String {
        switch value {
        case .null: return "NULL"
        case .integer(let v): return String(v)
        case .real(let d): return String(d)
        case .blob(let b): return "x'" + b.prefix(32).map { String(format: "%02x", $0) }.joined() + (b.count > 32 ? "…'" : "'")
        case .text:
            // Render from the raw bytes so invalid UTF-8 and NUL stay visible as escapes.
            var bytes: [UInt8] = []
            if let raw, let p = RowEncoder.textPointer(raw.handle, index) { bytes = Array(p.prefix(80)) }
            if raw == nil, case .text(let s) = value { bytes = Array(s.utf8.prefix(80)) }
            var s = ""
            var i = 0
            while i < bytes.count {
                let b = bytes[i]
                if b == 0 {
                    s += "\\0"
                    i += 1
                } else if b < 0x80 {
                    s.unicodeScalars.append(Unicode.Scalar(b))
                    i += 1
                } else if let len = bytes.withUnsafeBufferPointer({ RowEncoder.utf8SequenceLength($0, i) }) {
                    s += String(decoding: bytes[i..<i + len], as: UTF8.self)
                    i += len
                } else {
                    s += String(format: "\\x%02x", b)
                    i += 1
                }
            }
            return s
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
