/// A PostgreSQL column type the migration creates.
enum TargetType: String, Sendable, Codable, CaseIterable {
    case bigint
    case doublePrecision
    case numeric
    case text
    case bytea
    case boolean
    case timestamptz
    case date
    case jsonb

    /// The type as written in DDL.
    var sql: String {
        switch self {
        case .doublePrecision: "double precision"
        default: rawValue
        }
    }

    /// The name used in `--cast`.
    var castName: String {
        switch self {
        case .doublePrecision: "double"
        default: rawValue
        }
    }

    init?(castName: String) {
        switch castName {
        case "double", "double precision", "float8": self = .doublePrecision
        case "int", "integer", "int8", "bigint": self = .bigint
        case "timestamp", "timestamptz": self = .timestamptz
        case "json", "jsonb": self = .jsonb
        case "bool", "boolean": self = .boolean
        default:
            guard let t = TargetType(rawValue: castName) else { return nil }
            self = t
        }
    }
}

/// How SQLite values of a column are read and checked. A value whose storage class does not fit is an error row.
enum Conversion: Sendable, Equatable, Codable {
    /// INTEGER only.
    case integer
    /// REAL, or INTEGER when exactly representable.
    case double
    /// INTEGER, REAL, or TEXT that is a decimal number.
    case numeric
    /// TEXT (valid UTF-8, no NUL).
    case text
    /// BLOB.
    case bytea
    /// INTEGER 0/1.
    case boolFromInteger
    /// TEXT t/f/true/false.
    case boolFromText
    /// ISO-8601 TEXT; zone-less values are at `offsetSeconds` from UTC.
    case timestampISO(offsetSeconds: Int)
    /// INTEGER or REAL seconds since the epoch.
    case timestampUnixSeconds
    /// INTEGER milliseconds since the epoch.
    case timestampUnixMillis
    /// TEXT `YYYY-MM-DD`.
    case date
    /// TEXT holding valid JSON.
    case json

    static func parse(type: TargetType, using: String?) -> Conversion? {
        let u = using?.lowercased()
        switch type {
        case .bigint: return u == nil ? .integer : nil
        case .doublePrecision: return u == nil ? .double : nil
        case .numeric: return u == nil ? .numeric : nil
        case .text: return u == nil ? .text : nil
        case .bytea: return u == nil ? .bytea : nil
        case .date: return u == nil ? .date : nil
        case .jsonb: return u == nil ? .json : nil
        case .boolean:
            switch u {
            case nil, "01": return .boolFromInteger
            case "tf": return .boolFromText
            default: return nil
            }
        case .timestamptz:
            switch u {
            case nil, "iso": return .timestampISO(offsetSeconds: 0)
            case "unix": return .timestampUnixSeconds
            case "unixms": return .timestampUnixMillis
            case let s? where s.hasPrefix("iso+") || s.hasPrefix("iso-"):
                guard let off = parseOffset(Array(s.utf8.dropFirst(3))) else { return nil }
                return .timestampISO(offsetSeconds: off)
            default: return nil
            }
        }
    }

    /// The `using` part of a cast rule, `nil` for the default.
    var usingName: String? {
        switch self {
        case .boolFromText: "tf"
        case .timestampUnixSeconds: "unix"
        case .timestampUnixMillis: "unixms"
        case .timestampISO(let off) where off != 0:
            "iso" + (off < 0 ? "-" : "+") + twoDigits(abs(off) / 3600) + ":" + twoDigits(abs(off) % 3600 / 60)
        default: nil
        }
    }

    private func twoDigits(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

    /// Parses `+HH:MM`, `+HHMM` or `+HH` into seconds east of UTC.
    static func parseOffset(_ b: [UInt8]) -> Int? {
        guard let sign = b.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else { return nil }
        let digits = b.dropFirst().filter { $0 != UInt8(ascii: ":") }
        guard digits.count == 2 || digits.count == 4, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        let d = digits.map { Int($0) - 48 }
        let h = d[0] * 10 + d[1]
        let m = d.count == 4 ? d[2] * 10 + d[3] : 0
        guard h <= 15, m <= 59 else { return nil }
        return (sign == UInt8(ascii: "-") ? -1 : 1) * (h * 3600 + m * 60)
    }
}

/// pgloader-like defaults for a declared SQLite type.
enum TypeMapping {
    /// Maps a declared type to a target type and conversion.
    ///
    /// | declared (case-insensitive) | PostgreSQL | values accepted |
    /// |---|---|---|
    /// | BOOLEAN, BOOL | boolean | integer 0/1 |
    /// | DATETIME, TIMESTAMP* | timestamptz | ISO-8601 text, zone-less = UTC |
    /// | DATE | date | `YYYY-MM-DD` text |
    /// | JSON, JSONB | jsonb | valid JSON text |
    /// | contains INT | bigint | integers |
    /// | REAL, FLOA*, DOUB* | double precision | reals, integers |
    /// | NUMERIC, DECIMAL* | numeric | integers, reals, decimal text |
    /// | contains CHAR, CLOB, TEXT; empty | text | text |
    /// | BLOB | bytea | blobs |
    /// | anything else | text | text |
    static func map(declared: String) -> (TargetType, Conversion) {
        let d = declared.uppercased().trimmingCharactersASCIIWhitespace()
        let base = d.split(separator: "(").first.map(String.init)?.trimmingCharactersASCIIWhitespace() ?? d
        switch base {
        case "BOOLEAN", "BOOL": return (.boolean, .boolFromInteger)
        case "DATETIME", "TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITHOUT TIME ZONE":
            return (.timestamptz, .timestampISO(offsetSeconds: 0))
        case "DATE": return (.date, .date)
        case "JSON", "JSONB": return (.jsonb, .json)
        case "BLOB", "BYTEA": return (.bytea, .bytea)
        default: break
        }
        if d.contains("INT") { return (.bigint, .integer) }
        if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") || d.isEmpty { return (.text, .text) }
        if d.hasPrefix("REAL") || d.hasPrefix("FLOA") || d.hasPrefix("DOUB") { return (.doublePrecision, .double) }
        if d.hasPrefix("NUMERIC") || d.hasPrefix("DECIMAL") { return (.numeric, .numeric) }
        return (.text, .text)
    }

    /// Translates an SQLite column default into a PostgreSQL default expression, or `nil` when it cannot be
    /// translated faithfully (reported as a warning).
    static func translateDefault(_ sql: String, type: TargetType) -> String? {
        let s = sql.trimmingCharactersASCIIWhitespace()
        let upper = s.uppercased()
        if upper == "NULL" { return "NULL" }
        switch upper {
        case "CURRENT_TIMESTAMP":
            return type == .timestamptz || type == .text ? "CURRENT_TIMESTAMP" : nil
        case "CURRENT_DATE": return type == .date || type == .text ? "CURRENT_DATE" : nil
        case "TRUE", "FALSE":
            return type == .boolean ? upper.lowercased() : nil
        default: break
        }
        if s.hasPrefix("'"), s.hasSuffix("'"), s.count >= 2 {
            // SQLite and PostgreSQL (standard_conforming_strings) share the '' escape.
            let literal = s
            switch type {
            case .text, .timestamptz, .date, .jsonb, .numeric: return literal + "::" + type.sql
            default: return nil
            }
        }
        var numeric = s
        if numeric.hasPrefix("("), numeric.hasSuffix(")") { numeric = String(numeric.dropFirst().dropLast()) }
        if Double(numeric) != nil {
            switch type {
            case .boolean:
                if numeric == "0" { return "false" }
                if numeric == "1" { return "true" }
                return nil
            case .bigint: return Int64(numeric) != nil ? numeric : nil
            case .doublePrecision, .numeric: return numeric
            default: return nil
            }
        }
        return nil
    }
}

extension String {
    func trimmingCharactersASCIIWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\n" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
