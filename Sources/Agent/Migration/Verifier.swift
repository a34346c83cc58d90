import Crypto
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Shared

/// A table's content checksum: row count and the sum of 60-bit row hashes.
///
/// Each row hash is the first 60 bits of the MD5 of the row's canonical rendering (see ``RowEncoder``). The sum
/// is order-independent, so it needs no sort on either side; since the key is part of every row it identifies
/// the same set of rows as a comparison in primary-key order, and for tables without a key it is the multiset of
/// full rows. On a mismatch ``Verifier/firstDifference`` walks both sides in key order to name the first key.
struct TableChecksum: Sendable, Equatable, Codable {
    var rows: Int64
    var sum: UInt128

    static let zero = TableChecksum(rows: 0, sum: 0)

    mutating func add(_ digest: Insecure.MD5Digest) {
        rows += 1
        sum += UInt128(Self.hash60(digest))
    }

    /// The first 15 hex digits of the MD5, as PostgreSQL's `('x'||substr(md5(…),1,15))::bit(60)::bigint`.
    static func hash60(_ digest: Insecure.MD5Digest) -> UInt64 {
        digest.withUnsafeBytes { b in
            var v: UInt64 = 0
            for k in 0..<7 { v = v << 8 | UInt64(b[k]) }
            return v << 4 | UInt64(b[7] >> 4)
        }
    }

    static func hex(_ digest: Insecure.MD5Digest) -> String {
        digest.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
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
    /// The canonical binary rendering of one non-NULL column in SQL (see ``RowEncoder``): the binary send
    /// functions for fixed-width types, length-prefixed bytea, NUL-terminated text (text never holds NUL).
    static func canonicalExpression(_ column: ColumnPlan) -> String {
        let q = pgQuote(column.name)
        switch column.type {
        case .bigint: return "int8send(\(q))"
        case .doublePrecision: return "float8send(\(q))"
        case .boolean: return "boolsend(\(q))"
        case .timestamptz: return "timestamptz_send(\(q))"
        case .date: return "date_send(\(q))"
        case .bytea: return "int4send(length(\(q))) || \(q)"
        case .text: return "textsend(\(q)) || '\\x00'::bytea"
        case .numeric, .jsonb: return "textsend(\(q)::text) || '\\x00'::bytea"
        }
    }

    /// `md5(…)` of the whole row's canonical rendering (a bytea): per column 0x00 for NULL, else 0x01 and the value.
    static func rowHashExpression(_ plan: TablePlan) -> String {
        let parts = plan.columns.map { "coalesce('\\x01'::bytea || \(canonicalExpression($0)), '\\x00'::bytea)" }
        return "md5(" + (parts.isEmpty ? "''::bytea" : parts.joined(separator: " || ")) + ")"
    }

    /// The target table's checksum.
    static func targetChecksum(_ plan: TablePlan, connection: PostgresConnection, logger: Logger) async throws
        -> TableChecksum
    {
        let sql = "SELECT count(*)::text, coalesce(sum(('x' || substr(\(rowHashExpression(plan)), 1, 15))::bit(60)::bigint), 0)::text FROM \(plan.qualified)"
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
        let sql = "SELECT \(keyExprs), \(rowHashExpression(plan)) FROM \(plan.qualified) ORDER BY \(pgOrder)"
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
                if case .row(let digest) = encoder.encode(stmt.handle, into: &scratch) {
                    sourceHash = TableChecksum.hex(digest)
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
