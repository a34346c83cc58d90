import Shared

/// A per-column override of the default type mapping: `table.column:type[:using]`.
///
/// Types: `bigint`, `double`, `numeric`, `text`, `bytea`, `boolean`, `timestamptz`, `date`, `jsonb`.
/// `using` says how the SQLite value is read:
/// - `boolean`: `01` (integers 0/1, the default) or `tf` (text `t`/`f`/`true`/`false`, any case);
/// - `timestamptz`: `iso` (ISO-8601 text, zone-less values are UTC, the default), `iso+02:00` / `iso-05:00`
///   (zone-less values are in that offset), `unix` (integer or real seconds), `unixms` (integer milliseconds).
///
/// Encoded as its string form in JSON, so a task spec carries `"casts": ["jobs.params:jsonb"]`.
struct CastRule: Sendable, Equatable, Codable, CustomStringConvertible {
    var table: String
    var column: String
    var type: TargetType
    var conversion: Conversion

    /// Parses `table.column:type[:using]`. The table name may contain dots; the last dot before the colon splits.
    init(parsing text: String) throws(MusterError) {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, let dot = parts[0].lastIndex(of: ".") else {
            throw MusterError(.usage, "invalid --cast '\(text)'", hint: "use table.column:type[:using]")
        }
        table = String(parts[0][..<dot])
        column = String(parts[0][parts[0].index(after: dot)...])
        guard !table.isEmpty, !column.isEmpty else {
            throw MusterError(.usage, "invalid --cast '\(text)'", hint: "use table.column:type[:using]")
        }
        guard let t = TargetType(castName: parts[1].lowercased()) else {
            throw MusterError(
                .usage, "unknown type '\(parts[1])' in --cast '\(text)'",
                hint: "one of bigint, double, numeric, text, bytea, boolean, timestamptz, date, jsonb")
        }
        type = t
        let using = parts.count == 3 ? parts[2] : nil
        guard let c = Conversion.parse(type: t, using: using) else {
            throw MusterError(
                .usage, "unknown conversion '\(using ?? "")' for \(t.sql) in --cast '\(text)'",
                hint: "boolean: 01 or tf; timestamptz: iso, iso+HH:MM, unix, unixms")
        }
        conversion = c
    }

    var description: String {
        var s = "\(table).\(column):\(type.castName)"
        if let u = conversion.usingName { s += ":\(u)" }
        return s
    }

    init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try CastRule(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
