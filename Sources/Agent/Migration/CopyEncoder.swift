import Crypto
import GRDBSQLite
import NIOCore

/// One column as the copier reads it: its SQLite name, and how its values become PostgreSQL values.
struct ColumnPlan: Sendable, Equatable, Codable {
    var name: String
    var type: TargetType
    var conversion: Conversion
    var notNull: Bool
    /// The PostgreSQL default expression, if one was translated.
    var defaultSQL: String?
    /// Set for the rowid alias that becomes an identity column.
    var identity: Bool
}

/// Why a source row was not copied.
struct RowProblem: Sendable, Equatable {
    var column: Int
    var reason: String
}

/// Turns the current row of an SQLite statement into one line of COPY text and the row's checksum input.
///
/// The row hash is what both sides agree on (see ``Verifier``): the XOR over the columns of PostgreSQL's extended
/// hash of each value, seeded with the column's position (1, 2, …), or the seed itself for NULL. Values are hashed in
/// their canonical form: bigint with `hashint8extended`; timestamptz as µs since 2000-01-01 UTC
/// (`timestamp_hash_extended`, the same function); date as days since 2000-01-01 and boolean as 0/1 with
/// `hashint4extended`; text, jsonb (as PostgreSQL prints it) and numeric (as PostgreSQL prints it) with
/// `hashtextextended` over their UTF-8 bytes; double precision (its IEEE-754 bits) and bytea with
/// `hashtextextended` over their lowercase hex. See ``PGHash``.
struct RowEncoder {
    let columns: [ColumnPlan]
    /// `columns`' conversions, so the per-row loop does not copy (and retain) every ``ColumnPlan``.
    private let conversions: [Conversion]
    private var rowHash: UInt64 = 0
    private var scratch: [UInt8] = []
    private var json = JSONCanonical()
    private var jsonText: [UInt8] = []

    init(columns: [ColumnPlan]) {
        self.columns = columns
        conversions = columns.map(\.conversion)
        scratch.reserveCapacity(256)
        jsonText.reserveCapacity(1024)
    }

    enum Outcome {
        /// The row's hash (see ``Verifier``).
        case row(UInt64)
        case problem(RowProblem)
    }

    /// Encodes the current row of `stmt` (whose result columns are `columns`, in order) onto `buffer`.
    /// On a problem the buffer is left as it was.
    mutating func encode(_ stmt: OpaquePointer, into buffer: inout ByteBuffer) -> Outcome {
        let rowStart = buffer.writerIndex
        rowHash = 0
        for index in conversions.indices {
            if index > 0 { buffer.writeInteger(UInt8(ascii: "\t")) }
            if let reason = encodeValue(stmt, Int32(index), conversions[index], seed: UInt64(index + 1), into: &buffer) {
                buffer.moveWriterIndex(to: rowStart)
                return .problem(RowProblem(column: index, reason: reason))
            }
        }
        buffer.writeInteger(UInt8(ascii: "\n"))
        return .row(rowHash)
    }

    /// Writes one value (COPY text to `buffer`, its hash into `rowHash`); returns a reason on a problem.
    @inline(__always)
    private mutating func encodeValue(
        _ stmt: OpaquePointer, _ i: Int32, _ conversion: Conversion, seed: UInt64, into buffer: inout ByteBuffer
    ) -> String? {
        let storage = sqlite3_column_type(stmt, i)
        if storage == SQLITE_NULL {
            buffer.writeInteger(UInt16(0x5C4E))  // "\N"
            rowHash ^= seed
            return nil
        }
        switch conversion {
        case .integer:
            guard storage == SQLITE_INTEGER else { return mismatch(storage, "bigint") }
            let v = sqlite3_column_int64(stmt, i)
            Self.appendInt(v, to: &buffer)
            rowHash ^= PGHash.int64(v, seed: seed)

        case .double:
            let d: Double
            if storage == SQLITE_FLOAT {
                d = sqlite3_column_double(stmt, i)
            } else if storage == SQLITE_INTEGER {
                let v = sqlite3_column_int64(stmt, i)
                guard let exact = Double(exactly: v) else { return "integer \(v) is not exactly representable as double precision" }
                d = exact
            } else {
                return mismatch(storage, "double precision")
            }
            let text = d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : d.description
            buffer.writeString(text)
            rowHash ^= withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { hex in
                var bits = d.bitPattern
                for k in stride(from: 15, through: 0, by: -1) {
                    hex[k] = Self.hexDigits[Int(bits & 15)]
                    bits >>= 4
                }
                return PGHash.bytes(UnsafeBufferPointer(hex), seed: seed)
            }

        case .numeric:
            let normal: [UInt8]?
            switch storage {
            case SQLITE_INTEGER:
                scratch.removeAll(keepingCapacity: true)
                Self.appendInt(sqlite3_column_int64(stmt, i), to: &scratch)
                normal = scratch
            case SQLITE_FLOAT:
                let d = sqlite3_column_double(stmt, i)
                guard d.isFinite else { return "non-finite real \(d)" }
                normal = Array(d.description.utf8).withUnsafeBufferPointer { DecimalText.normalize($0) }
            case SQLITE_TEXT:
                normal = Self.textPointer(stmt, i).flatMap { DecimalText.normalize($0) }
                if normal == nil { return "text is not a decimal number" }
            default:
                return mismatch(storage, "numeric")
            }
            guard let normal else { return "value is not a decimal number" }
            buffer.writeBytes(normal)
            rowHash ^= normal.withUnsafeBufferPointer { PGHash.bytes($0, seed: seed) }

        case .text:
            guard storage == SQLITE_TEXT else { return mismatch(storage, "text") }
            let p = Self.textPointer(stmt, i) ?? UnsafeBufferPointer(start: nil, count: 0)
            if let reason = Self.appendEscaped(p, to: &buffer) { return reason }
            rowHash ^= PGHash.bytes(p, seed: seed)

        case .bytea:
            guard storage == SQLITE_BLOB else { return mismatch(storage, "bytea") }
            let n = Int(sqlite3_column_bytes(stmt, i))
            let raw = UnsafeRawBufferPointer(start: sqlite3_column_blob(stmt, i), count: n)
            buffer.writeInteger(UInt8(ascii: "\\"))
            buffer.writeInteger(UInt8(ascii: "\\"))
            buffer.writeInteger(UInt8(ascii: "x"))
            let hexStart = buffer.writerIndex - buffer.readerIndex
            Self.appendHex(raw, to: &buffer)
            rowHash ^= buffer.withUnsafeReadableBytes { all in
                PGHash.bytes(UnsafeRawBufferPointer(rebasing: all[hexStart...]), seed: seed)
            }

        case .boolFromInteger:
            guard storage == SQLITE_INTEGER else { return mismatch(storage, "boolean (from 0/1)") }
            let v = sqlite3_column_int64(stmt, i)
            guard v == 0 || v == 1 else { return "integer \(v) is not a boolean 0/1" }
            appendBool(v == 1, seed: seed, into: &buffer)

        case .boolFromText:
            guard storage == SQLITE_TEXT, let p = Self.textPointer(stmt, i) else {
                return mismatch(storage, "boolean (from t/f)")
            }
            switch String(decoding: p, as: UTF8.self).lowercased() {
            case "t", "true": appendBool(true, seed: seed, into: &buffer)
            case "f", "false": appendBool(false, seed: seed, into: &buffer)
            default: return "text is not a boolean t/f/true/false"
            }

        case .timestampISO(let offset):
            guard storage == SQLITE_TEXT, let p = Self.textPointer(stmt, i) else {
                return mismatch(storage, "timestamptz (from ISO-8601 text)")
            }
            guard let micros = Timestamps.parseISO(p, defaultOffset: offset) else {
                return "text is not an ISO-8601 timestamp"
            }
            appendTimestamp(micros, seed: seed, into: &buffer)

        case .timestampUnixSeconds:
            let micros: Int64
            if storage == SQLITE_INTEGER {
                let (m, o) = sqlite3_column_int64(stmt, i).multipliedReportingOverflow(by: 1_000_000)
                guard !o else { return "unix time out of range" }
                micros = m
            } else if storage == SQLITE_FLOAT {
                let d = (sqlite3_column_double(stmt, i) * 1_000_000).rounded()
                guard let m = Int64(exactly: d) else { return "unix time out of range" }
                micros = m
            } else {
                return mismatch(storage, "timestamptz (from unix seconds)")
            }
            guard micros >= Timestamps.minMicros, micros <= Timestamps.maxMicros else { return "unix time out of range" }
            appendTimestamp(micros, seed: seed, into: &buffer)

        case .timestampUnixMillis:
            guard storage == SQLITE_INTEGER else { return mismatch(storage, "timestamptz (from unix milliseconds)") }
            let (micros, o) = sqlite3_column_int64(stmt, i).multipliedReportingOverflow(by: 1000)
            guard !o, micros >= Timestamps.minMicros, micros <= Timestamps.maxMicros else {
                return "unix time out of range"
            }
            appendTimestamp(micros, seed: seed, into: &buffer)

        case .date:
            guard storage == SQLITE_TEXT, let p = Self.textPointer(stmt, i) else { return mismatch(storage, "date") }
            guard let days = Timestamps.parseDate(p) else { return "text is not a YYYY-MM-DD date" }
            scratch.removeAll(keepingCapacity: true)
            Timestamps.formatDate(days: days, into: &scratch)
            buffer.writeBytes(scratch)
            rowHash ^= PGHash.uint32(UInt32(bitPattern: Int32(truncatingIfNeeded: days - Self.postgresEpochDays)), seed: seed)

        case .json:
            guard storage == SQLITE_TEXT else { return mismatch(storage, "jsonb") }
            let p = Self.textPointer(stmt, i) ?? UnsafeBufferPointer(start: nil, count: 0)
            if let reason = Self.validateUTF8(p) { return reason }
            guard json.canonicalize(p, into: &jsonText) else { return "text is not valid JSON" }
            if let reason = jsonText.withUnsafeBufferPointer({ Self.appendEscaped($0, to: &buffer) }) { return reason }
            rowHash ^= jsonText.withUnsafeBufferPointer { PGHash.bytes($0, seed: seed) }
        }
        return nil
    }

    private func mismatch(_ storage: Int32, _ target: String) -> String {
        "storage class \(Self.storageName(storage)) does not fit \(target)"
    }

    static func storageName(_ storage: Int32) -> String {
        switch storage {
        case SQLITE_INTEGER: "INTEGER"
        case SQLITE_FLOAT: "REAL"
        case SQLITE_TEXT: "TEXT"
        case SQLITE_BLOB: "BLOB"
        default: "NULL"
        }
    }

    /// PostgreSQL's binary timestamps and dates count from 2000-01-01.
    static let postgresEpochMicros: Int64 = 946_684_800_000_000
    static let postgresEpochDays = 10_957

    private mutating func appendBool(_ v: Bool, seed: UInt64, into buffer: inout ByteBuffer) {
        buffer.writeInteger(v ? UInt8(ascii: "t") : UInt8(ascii: "f"))
        rowHash ^= PGHash.uint32(v ? 1 : 0, seed: seed)
    }

    private mutating func appendTimestamp(_ micros: Int64, seed: UInt64, into buffer: inout ByteBuffer) {
        scratch.removeAll(keepingCapacity: true)
        Timestamps.format(micros: micros, into: &scratch)
        buffer.writeBytes(scratch)
        rowHash ^= PGHash.int64(micros - Self.postgresEpochMicros, seed: seed)
    }

    // MARK: - Byte helpers

    @inline(__always)
    static func textPointer(_ stmt: OpaquePointer, _ i: Int32) -> UnsafeBufferPointer<UInt8>? {
        // sqlite3_column_text before sqlite3_column_bytes: the documented order that avoids a conversion.
        guard let p = sqlite3_column_text(stmt, i) else { return nil }
        return UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(stmt, i)))
    }

    static func appendInt<B: IntAppendable>(_ v: Int64, to out: inout B) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { tmp in
            var m = v.magnitude
            var k = 20
            repeat {
                k -= 1
                tmp[k] = UInt8(48 + m % 10)
                m /= 10
            } while m != 0
            if v < 0 {
                k -= 1
                tmp[k] = UInt8(ascii: "-")
            }
            out.appendBytes(UnsafeBufferPointer(rebasing: tmp[k..<20]))
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    static func appendHex(_ raw: UnsafeRawBufferPointer, to buffer: inout ByteBuffer) {
        let n = raw.count
        guard n > 0 else { return }
        hexDigits.withUnsafeBufferPointer { hex in
            _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: n * 2) { dst in
                var j = 0
                for b in raw {
                    dst[j] = hex[Int(b >> 4)]
                    dst[j + 1] = hex[Int(b & 15)]
                    j += 2
                }
                return j
            }
        }
    }

    /// Checks that `p` is well-formed UTF-8 without NUL; returns a reason otherwise.
    static func validateUTF8(_ p: UnsafeBufferPointer<UInt8>) -> String? {
        var i = 0
        let n = p.count
        while i < n {
            let b = p[i]
            if b == 0 { return "text contains a NUL byte" }
            if b < 0x80 {
                i += 1
                continue
            }
            guard let len = utf8SequenceLength(p, i) else { return "text is not valid UTF-8 (at byte \(i))" }
            i += len
        }
        return nil
    }

    /// The length of the valid UTF-8 sequence starting at `i` (a non-ASCII lead byte), or `nil`.
    @inline(__always)
    static func utf8SequenceLength(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int? {
        let b = p[i]
        let n = p.count
        @inline(__always) func cont(_ k: Int) -> Bool { i + k < n && p[i + k] & 0xC0 == 0x80 }
        switch b {
        case 0xC2...0xDF: return cont(1) ? 2 : nil
        case 0xE0: return cont(1) && p[i + 1] >= 0xA0 && cont(2) ? 3 : nil
        case 0xED: return cont(1) && p[i + 1] < 0xA0 && cont(2) ? 3 : nil  // no surrogates
        case 0xE1...0xEC, 0xEE...0xEF: return cont(1) && cont(2) ? 3 : nil
        case 0xF0: return cont(1) && p[i + 1] >= 0x90 && cont(2) && cont(3) ? 4 : nil
        case 0xF1...0xF3: return cont(1) && cont(2) && cont(3) ? 4 : nil
        case 0xF4: return cont(1) && p[i + 1] < 0x90 && cont(2) && cont(3) ? 4 : nil
        default: return nil
        }
    }

    /// Appends `p` as a COPY text field (backslash, tab, newline, carriage return escaped), validating UTF-8 and
    /// refusing NUL on the way. Returns a reason on a problem (the buffer may then hold a partial field).
    static func appendEscaped(_ p: UnsafeBufferPointer<UInt8>, to buffer: inout ByteBuffer) -> String? {
        var problem: String?
        let n = p.count
        guard n > 0, let src = p.baseAddress else { return nil }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: n * 2) { dst in
            var i = 0
            var j = 0
            while i < n {
                // Eight bytes at a time while none needs a look: no byte >= 0x80, < 0x20 or a backslash. (The
                // tests may flag a byte that is fine, never miss one; a flagged word goes byte by byte below.)
                while n - i >= 8 {
                    let w = UnsafeRawPointer(src + i).loadUnaligned(as: UInt64.self)
                    let high: UInt64 = 0x8080_8080_8080_8080
                    let control = (w &- 0x2020_2020_2020_2020) & ~w & high
                    let x = w ^ 0x5C5C_5C5C_5C5C_5C5C
                    let backslash = (x &- 0x0101_0101_0101_0101) & ~x & high
                    if (w & high) | control | backslash != 0 { break }
                    dst.storeBytes(of: w, toByteOffset: j, as: UInt64.self)
                    i += 8
                    j += 8
                }
                if i >= n { break }
                let b = p[i]
                if b >= 0x80 {
                    guard let len = utf8SequenceLength(p, i) else {
                        problem = "text is not valid UTF-8 (at byte \(i))"
                        return j
                    }
                    for k in 0..<len { dst[j + k] = p[i + k] }
                    i += len
                    j += len
                    continue
                }
                switch b {
                case 0:
                    problem = "text contains a NUL byte"
                    return j
                case UInt8(ascii: "\\"):
                    dst[j] = UInt8(ascii: "\\")
                    dst[j + 1] = UInt8(ascii: "\\")
                    j += 2
                case 0x09:
                    dst[j] = UInt8(ascii: "\\")
                    dst[j + 1] = UInt8(ascii: "t")
                    j += 2
                case 0x0A:
                    dst[j] = UInt8(ascii: "\\")
                    dst[j + 1] = UInt8(ascii: "n")
                    j += 2
                case 0x0D:
                    dst[j] = UInt8(ascii: "\\")
                    dst[j + 1] = UInt8(ascii: "r")
                    j += 2
                default:
                    dst[j] = b
                    j += 1
                }
                i += 1
            }
            return j
        }
        return problem
    }
}

/// A byte sink for ``RowEncoder/appendInt(_:to:)``.
protocol IntAppendable {
    mutating func appendBytes(_ bytes: UnsafeBufferPointer<UInt8>)
}

extension ByteBuffer: IntAppendable {
    @inline(__always)
    mutating func appendBytes(_ bytes: UnsafeBufferPointer<UInt8>) { writeBytes(UnsafeRawBufferPointer(bytes)) }
}

extension Array: IntAppendable where Element == UInt8 {
    @inline(__always)
    mutating func appendBytes(_ bytes: UnsafeBufferPointer<UInt8>) { append(contentsOf: bytes) }
}
