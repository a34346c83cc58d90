import Foundation
import Shared

/// What the migration needs to know about one SQLite database: its user tables with columns, keys, indexes,
/// foreign keys and AUTOINCREMENT counters. SQLite's own tables (`sqlite_%`) are never listed.
struct SQLiteSchema: Sendable {
    struct Column: Sendable, Equatable {
        var name: String
        /// The declared type as written (may be empty).
        var declaredType: String
        var notNull: Bool
        /// The default expression as SQLite stores it (`'x'`, `0`, `CURRENT_TIMESTAMP`, …).
        var defaultSQL: String?
        /// 1-based position in the primary key, 0 when not part of it.
        var primaryKeyPosition: Int
    }

    struct Index: Sendable, Equatable {
        var name: String
        var columns: [String]
        var unique: Bool
        /// `c` CREATE INDEX, `u` UNIQUE constraint, `pk` primary key.
        var origin: String
        /// Partial or expression indexes cannot be translated mechanically.
        var translatable: Bool
    }

    struct ForeignKey: Sendable, Equatable {
        var columns: [String]
        var parentTable: String
        /// Empty when the parent's primary key is meant.
        var parentColumns: [String]
        var onUpdate: String
        var onDelete: String
    }

    struct Table: Sendable {
        var name: String
        var columns: [Column]
        var primaryKey: [String]
        /// The column that aliases the rowid (`INTEGER PRIMARY KEY`), if any.
        var rowidAlias: String?
        var autoincrement: Bool
        /// `sqlite_sequence.seq` for AUTOINCREMENT tables.
        var sequenceValue: Int64?
        var indexes: [Index]
        var foreignKeys: [ForeignKey]
        var rowCount: Int64
    }

    var tables: [Table]

    /// Reads the schema of an open database.
    static func read(from db: SQLiteDatabase) throws(MusterError) -> SQLiteSchema {
        let master = try db.rows(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                + "ORDER BY name")
        var sequences: [String: Int64] = [:]
        let hasSequence = try !db.rows("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").isEmpty
        if hasSequence {
            for row in try db.rows("SELECT name, seq FROM sqlite_sequence") {
                if let n = row[0].string, let s = row[1].int { sequences[n] = s }
            }
        }
        var tables: [Table] = []
        for row in master {
            guard let name = row[0].string else { continue }
            let sql = row[1].string ?? ""
            if sql.uppercased().hasPrefix("CREATE VIRTUAL TABLE") { continue }
            let q = quoteSQLite(name)
            var columns: [Column] = []
            for c in try db.rows("PRAGMA table_xinfo(\(q))") {
                // hidden: 0 normal, 1 hidden (virtual tables), 2/3 generated columns: not copied.
                if let hidden = c[6].int, hidden != 0 { continue }
                columns.append(
                    Column(
                        name: c[1].string ?? "", declaredType: c[2].string ?? "", notNull: c[3].int == 1,
                        defaultSQL: c[4].string, primaryKeyPosition: Int(c[5].int ?? 0)))
            }
            let pk = columns.filter { $0.primaryKeyPosition > 0 }.sorted { $0.primaryKeyPosition < $1.primaryKeyPosition }
                .map(\.name)
            var rowidAlias: String?
            let withoutRowid = sql.uppercased().contains("WITHOUT ROWID")
            if pk.count == 1, !withoutRowid, let col = columns.first(where: { $0.name == pk[0] }),
                col.declaredType.uppercased() == "INTEGER"
            {
                // INTEGER PRIMARY KEY DESC is not an alias; it is rare enough to treat it as one anyway would be wrong.
                let upper = sql.uppercased()
                if !upper.contains("PRIMARY KEY DESC") { rowidAlias = col.name }
            }
            var indexes: [Index] = []
            for idx in try db.rows("PRAGMA index_list(\(q))") {
                guard let iname = idx[1].string else { continue }
                let origin = idx[3].string ?? "c"
                let partial = idx[4].int == 1
                var cols: [String] = []
                var expression = false
                for ic in try db.rows("PRAGMA index_info(\(quoteSQLite(iname)))") {
                    if let n = ic[2].string { cols.append(n) } else { expression = true }
                }
                indexes.append(
                    Index(name: iname, columns: cols, unique: idx[2].int == 1, origin: origin,
                          translatable: !partial && !expression))
            }
            indexes.sort { $0.name < $1.name }
            var fks: [Int64: ForeignKey] = [:]
            for fk in try db.rows("PRAGMA foreign_key_list(\(q))") {
                let id = fk[0].int ?? 0
                var entry = fks[id] ?? ForeignKey(
                    columns: [], parentTable: fk[2].string ?? "", parentColumns: [],
                    onUpdate: fk[5].string ?? "NO ACTION", onDelete: fk[6].string ?? "NO ACTION")
                entry.columns.append(fk[3].string ?? "")
                if let to = fk[4].string { entry.parentColumns.append(to) }
                fks[id] = entry
            }
            let count = try db.rows("SELECT count(*) FROM \(q)").first?.first?.int ?? 0
            tables.append(
                Table(
                    name: name, columns: columns, primaryKey: pk, rowidAlias: rowidAlias,
                    autoincrement: sql.uppercased().contains("AUTOINCREMENT"), sequenceValue: sequences[name],
                    indexes: indexes, foreignKeys: fks.keys.sorted().compactMap { fks[$0] }, rowCount: count))
        }
        return SQLiteSchema(tables: tables)
    }
}

/// Quotes an SQLite identifier (`"a""b"`).
func quoteSQLite(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
