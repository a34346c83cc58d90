import Foundation

/// The outcome of a migration: per source its fingerprint before and after, per table the counts, timing and
/// verification, the error rows, and warnings. Printed as a table or as JSON (`--json`).
struct MigrationReport: Sendable, Codable {
    struct Source: Sendable, Codable {
        var path: String
        var sizeBefore: Int64
        var sha256Before: String
        var sizeAfter: Int64?
        var sha256After: String?
        var snapshot: Bool
        /// The file's size, modification time or inode changed during the run (even if its hash did not).
        var modifiedDuringRun = false
        var unchanged: Bool { sizeAfter == sizeBefore && sha256After == sha256Before && !modifiedDuringRun }

        enum CodingKeys: String, CodingKey {
            case path, sizeBefore, sha256Before, sizeAfter, sha256After, snapshot, modifiedDuringRun, unchanged
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(path, forKey: .path)
            try c.encode(sizeBefore, forKey: .sizeBefore)
            try c.encode(sha256Before, forKey: .sha256Before)
            try c.encodeIfPresent(sizeAfter, forKey: .sizeAfter)
            try c.encodeIfPresent(sha256After, forKey: .sha256After)
            try c.encode(snapshot, forKey: .snapshot)
            if modifiedDuringRun { try c.encode(true, forKey: .modifiedDuringRun) }
            try c.encode(unchanged, forKey: .unchanged)
        }

        init(path: String, sizeBefore: Int64, sha256Before: String, snapshot: Bool) {
            self.path = path
            self.sizeBefore = sizeBefore
            self.sha256Before = sha256Before
            self.snapshot = snapshot
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            path = try c.decode(String.self, forKey: .path)
            sizeBefore = try c.decode(Int64.self, forKey: .sizeBefore)
            sha256Before = try c.decode(String.self, forKey: .sha256Before)
            sizeAfter = try c.decodeIfPresent(Int64.self, forKey: .sizeAfter)
            sha256After = try c.decodeIfPresent(String.self, forKey: .sha256After)
            snapshot = try c.decode(Bool.self, forKey: .snapshot)
            modifiedDuringRun = try c.decodeIfPresent(Bool.self, forKey: .modifiedDuringRun) ?? false
        }
    }

    enum Action: String, Sendable, Codable {
        /// Created and loaded.
        case create
        /// A partial load from an earlier run, dropped and loaded again.
        case reload
        /// Dropped and recreated because of `--replace`.
        case replace
        /// Loaded into an existing empty table with the same columns.
        case loadExisting
        /// Loaded and verified by an earlier run from the same source; left alone.
        case skip
    }

    struct Table: Sendable, Codable {
        var source: String
        var table: String
        var target: String
        var action: Action
        var rowsRead: Int64 = 0
        var rowsWritten: Int64 = 0
        var errorRows: Int64 = 0
        var bytes: Int64 = 0
        var seconds: Double = 0
        /// `nil` when not verified (dry run, or the run stopped before verification).
        var verified: Bool?
        var ordering: String
        var sourceChecksum: TableChecksum?
        var targetChecksum: TableChecksum?
        var firstDifference: String?
        var sequence: String?
    }

    var sources: [Source] = []
    var tables: [Table] = []
    var errorRows: [ErrorRow] = []
    var warnings: [String] = []
    var dryRun = false
    var seconds: Double = 0
    /// The DDL that would run (dry run) or ran.
    var ddl: [String] = []

    var totalRows: Int64 { tables.reduce(0) { $0 + $1.rowsWritten } }
    var allVerified: Bool { tables.allSatisfy { $0.verified == true || $0.action == .skip } }
    var totalErrorRows: Int64 { tables.reduce(0) { $0 + $1.errorRows } }
    var sourcesUnchanged: Bool { sources.allSatisfy { $0.unchanged || $0.snapshot } }

    /// 0 when every table verified with no error rows and every source unchanged, otherwise 1.
    var exitCode: Int32 {
        if dryRun { return 0 }
        return allVerified && totalErrorRows == 0 && sourcesUnchanged ? 0 : 1
    }

    // MARK: - Rendering

    /// The pgloader-style table for stdout.
    func renderTable() -> String {
        var rows: [[String]] = [["table", "read", "written", "errors", "bytes", "seconds", "verified"]]
        for t in tables {
            let verified: String
            switch (t.action, t.verified) {
            case (.skip, _): verified = "✓ (earlier run)"
            case (_, true?): verified = "✓"
            case (_, false?): verified = "✗"
            case (_, nil): verified = dryRun ? "dry run" : "-"
            }
            rows.append([
                t.table, String(t.rowsRead), String(t.rowsWritten), String(t.errorRows), Self.bytes(t.bytes),
                String(format: "%.2f", t.seconds), verified,
            ])
        }
        let totalRead = tables.reduce(0) { $0 + $1.rowsRead }
        let totalBytes = tables.reduce(0) { $0 + $1.bytes }
        rows.append(["Total", String(totalRead), String(totalRows), String(totalErrorRows), Self.bytes(totalBytes),
                     String(format: "%.2f", seconds), allVerified && !dryRun ? "✓" : (dryRun ? "dry run" : "✗")])
        var widths = [Int](repeating: 0, count: rows[0].count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ r: [String]) -> String {
            r.enumerated().map { i, c in
                let pad = String(repeating: " ", count: widths[i] - c.count)
                return i == 0 ? c + pad : pad + c
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        var out = [line(rows[0]), rule] + rows[1..<rows.count - 1].map(line) + [rule, line(rows[rows.count - 1])]
        for t in tables {
            if let d = t.firstDifference { out.append("✗ \(t.table): first differing key \(d)") }
            if !t.ordering.hasPrefix("primary key") { out.append("note \(t.table): \(t.ordering)") }
            if let s = t.sequence { out.append("sequence \(t.table): \(s)") }
        }
        if !errorRows.isEmpty {
            out.append("")
            out.append("error rows (first \(errorRows.count) of \(totalErrorRows)):")
            for e in errorRows.prefix(50) {
                out.append("  \(e.table) [\(e.key)] \(e.column) = \(e.value): \(e.reason)")
            }
        }
        for w in warnings { out.append("warning: \(w)") }
        for s in sources {
            let state =
                s.unchanged
                ? "unchanged"
                : s.sha256After == nil
                    ? "not re-checked"
                    : s.sha256After == s.sha256Before ? "CHANGED (written to during the run)" : "CHANGED"
            out.append("source \(s.path): \(s.sizeBefore) bytes sha256 \(s.sha256Before) → \(state)\(s.snapshot ? " (read from an online backup)" : "")")
        }
        return out.joined(separator: "\n")
    }

    static func bytes(_ n: Int64) -> String {
        let d = Double(n)
        let kb = 1024.0
        if d >= kb * kb * kb { return String(format: "%.1f GB", d / (kb * kb * kb)) }
        if d >= kb * kb { return String(format: "%.1f MB", d / (kb * kb)) }
        if d >= kb { return String(format: "%.1f kB", d / kb) }
        return "\(n) B"
    }

    /// JSON with sorted keys.
    func renderJSON() throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try enc.encode(self), as: UTF8.self)
    }
}
