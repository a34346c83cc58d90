import Crypto
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Shared

/// A table's content checksum: row count and the sum of 60-bit row hashes.
///
/// Each row hash is the XOR of PostgreSQL's extended hashes of the row's values (see ``RowEncoder``); the table sums
/// its low 60 bits. The sum is order-independent, so it needs no sort on either side; since the key is part of every
/// row it identifies the same set of rows as a comparison in primary-key order, and for tables without a key it is
/// the multiset of full rows. On a mismatch ``Verifier/firstDifference`` walks both sides in key order to name the
/// first key.
struct TableChecksum: Sendable, Equatable, Codable {
    var rows: Int64
    var sum: UInt128

    static let zero = TableChecksum(rows: 0, sum: 0)
    static let mask60: UInt64 = (1 << 60) - 1

    mutating func add(_ rowHash: UInt64) {
        rows += 1
        sum += UInt128(rowHash & Self.mask60)
    }

    enum CodingKeys: String, CodingKey { case rows, sum }

    init(rows: Int64, sum: UInt128) {
        self.rows = rows
        self.sum = sum
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rows = try c.decode(Int64.self, forKey: .rows)
        sum = UInt128(try c.decode(String.self, forKey: .sum)) ?? 0
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(rows, forKey: .rows)
        try c.encode(String(sum), forKey: .sum)
    }
}

/// Computes the target side of the checksum with SQL over the same canonical rendering the copier uses.
enum Verifier {
    /// The hash of one column's value in SQL (see ``RowEncoder``), seeded with its position; the seed for NULL.
    static func columnHashExpression(_ column: ColumnPlan, seed: Int) -> String {
        let q = pgQuote(column.name)
        let h: String
        switch column.type {
        case .bigint: h = "hashint8extended(\(q), \(seed))"
        case .timestamptz: h = "timestamp_hash_extended(\(q) AT TIME ZONE 'UTC', \(seed))"
        case .date: h = "hashint4extended(\(q) - DATE '2000-01-01', \(seed))"
        case .boolean: h = "hashint4extended(\(q)::int4, \(seed))"
        case .text: h = "hashtextextended(\(q) COLLATE \"C\", \(seed))"
        case .numeric, .jsonb: h = "hashtextextended(\(q)::text COLLATE \"C\", \(seed))"
        case .doublePrecision: h = "hashtextextended(encode(float8send(\(q)), 'hex'), \(seed))"
        case .bytea: h = "hashtextextended(encode(\(q), 'hex'), \(seed))"
        }
        return "coalesce(\(h), \(seed))"
    }

    /// The row hash (a bigint): the XOR of the column hashes.
    static func rowHashExpression(_ plan: TablePlan) -> String {
        let parts = plan.columns.enumerated().map { columnHashExpression($1, seed: $0 + 1) }
        return "(" + (parts.isEmpty ? "0::int8" : parts.joined(separator: " # ")) + ")"
    }

    /// The target table's checksum.
    static func targetChecksum(_ plan: TablePlan, connection: PostgresConnection, logger: Logger) async throws
        -> TableChecksum
    {
        let sql = "SELECT count(*)::text, coalesce(sum(\(rowHashExpression(plan)) & \(TableChecksum.mask60)), 0)::text FROM \(plan.qualified)"
        let rows = try await connection.strings(sql, logger: logger)
        guard let r = rows.first, let c = r[0].flatMap({ Int64($0) }), let s = r[1].flatMap({ UInt128($0) }) else {
            throw MusterError(.internal, "unexpected checksum result for \(plan.qualified)")
        }
        return TableChecksum(rows: c, sum: s)
    }

    /// Walks source and target in key order (full-row order without a key) and returns the first key whose rows
    /// differ, or a description of which side has extra rows.
    static func firstDifference(
        _ plan: TablePlan, readPath: String, connection: PostgresConnection, logger: Logger
    ) async throws -> String {
        let db = try SQLiteDatabase(path: readPath)
        let order = plan.orderColumns.map { quoteSQLite($0) }.joined(separator: ", ")
        let stmt = try db.prepare(plan.selectSQL + " ORDER BY " + order)
        let keyIndexes = plan.orderColumns.compactMap { name in plan.columns.firstIndex { $0.name == name } }
        var encoder = RowEncoder(columns: plan.columns)
        var scratch = ByteBuffer()

        let pgOrder = plan.orderColumns.map { name -> String in
            let col = plan.columns.first { $0.name == name }
            let collate = col?.type == .text ? " COLLATE \"C\"" : ""
            return pgQuote(name) + collate + " NULLS FIRST"
        }.joined(separator: ", ")
        let keyExprs = plan.orderColumns.map { "coalesce(\(pgQuote($0))::text, 'NULL')" }.joined(separator: " || ', ' || ")
        let sql = "SELECT \(keyExprs), \(rowHashExpression(plan))::text FROM \(plan.qualified) ORDER BY \(pgOrder)"
        var targetRows = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).makeAsyncIterator()

        func sourceKey() -> String {
            keyIndexes.map { i -> String in
                switch stmt.value(at: Int32(i)) {
                case .null: return "NULL"
                case .integer(let v): return String(v)
                case .real(let d): return String(d)
                case .text(let s): return s
                case .blob(let b): return "x'" + b.prefix(16).map { String(format: "%02x", $0) }.joined() + "'"
                }
            }.joined(separator: ", ")
        }

        var position = 0
        while true {
            var sourceHash: String?
            var key = ""
            while try stmt.step() {
                scratch.clear()
                if case .row(let hash) = encoder.encode(stmt.handle, into: &scratch) {
                    sourceHash = String(Int64(bitPattern: hash))
                    key = sourceKey()
                    break
                }
            }
            let target = try await targetRows.next()
            let decoded = try target.map { try $0.decode((String, String).self) }
            let targetKey = decoded?.0
            let targetHash = decoded?.1
            position += 1
            switch (sourceHash, targetHash) {
            case (nil, nil):
                return "no difference found in key order (the checksums differ; re-run to re-check)"
            case (nil, _?):
                return "target has extra rows, first at key (\(targetKey ?? "?"))"
            case (_?, nil):
                return "target is missing rows, first at key (\(key))"
            case (let s?, let t?) where s != t:
                return "(\(key))"
            default:
                continue
            }
        }
    }
}
