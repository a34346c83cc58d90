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
/// The checksum input is the canonical binary rendering both sides agree on (see ``Verifier``): per column a
/// 0x00 byte for NULL, else 0x01 and the value as PostgreSQL's binary send functions give it — bigint, double
/// (IEEE bits) and timestamptz (µs since 2000-01-01) as 8 bytes big-endian, date as 4 (days since 2000-01-01),
/// boolean as one byte 0/1, bytea as a 4-byte big-endian length and the bytes — or, for text, jsonb (as PostgreSQL
/// prints it) and numeric (as PostgreSQL prints it), the UTF-8 bytes followed by a 0x00 byte (they never contain
/// NUL). The rendering is prefix-free, so different rows never render alike. Its MD5 is the row hash.
struct RowEncoder {
    let columns: [ColumnPlan]
    private var canon: [UInt8] = []
    private var scratch: [UInt8] = []

    init(columns: [ColumnPlan]) {
        self.columns = columns
        canon.reserveCapacity(4096)
        scratch.reserveCapacity(256)
    }

    enum Outcome {
        case row(Insecure.MD5Digest)
        case problem(RowProblem)
    }

    /// Encodes the current row of `stmt` (whose result columns are `columns`, in order) onto `buffer`.
    /// On a problem the buffer is left as it was.
    mutating func encode(_ stmt: OpaquePointer, into buffer: inout ByteBuffer) -> Outcome {
        let rowStart = buffer.writerIndex
        canon.removeAll(keepingCapacity: true)
        for (index, column) in columns.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: "\t")) }
            if let reason = encodeValue(stmt, Int32(index), column.conversion, into: &buffer) {
                buffer.moveWriterIndex(to: rowStart)
                return .problem(RowProblem(column: index, reason: reason))
            }
        }
        buffer.writeInteger(UInt8(ascii: "\n"))
        return .row(Insecure.MD5.hash(data: canon))
    }

    /// Writes one value (COPY text to `buffer`, canonical form to `canon`); returns a reason on a problem.
    @inline(__always)
    private mutating func encodeValue(
        _ stmt: OpaquePointer, _ i: Int32, _ conversion: Conversion, into buffer: inout ByteBuffer
    ) -> String? {
        let storage = sqlite3_column_type(stmt, i)
        if storage == SQLITE_NULL {
            buffer.writeInteger(UInt16(0x5C4E))  // "\N"
            canon.append(0)
            return nil
        }
        canon.append(1)
        switch conversion {
        case .integer:
            guard storage == SQLITE_INTEGER else { return mismatch(storage, "bigint") }
            let v = sqlite3_column_int64(stmt, i)
            Self.appendInt(v, to: &buffer)
            Self.appendBE(UInt64(bitPattern: v), to: &canon)

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
            Self.appendBE(d.bitPattern, to: &canon)

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
            canon.append(contentsOf: normal)
            canon.append(0)

        case .text:
            guard storage == SQLITE_TEXT else { return mismatch(storage, "text") }
            let p = Self.textPointer(stmt, i) ?? UnsafeBufferPointer(start: nil, count: 0)
            if let reason = Self.appendEscaped(p, to: &buffer) { return reason }
            canon.append(contentsOf: p)
            canon.append(0)

        case .bytea:
            guard storage == SQLITE_BLOB else { return mismatch(storage, "bytea") }
            let n = Int(sqlite3_column_bytes(stmt, i))
            let raw = UnsafeRawBufferPointer(start: sqlite3_column_blob(stmt, i), count: n)
            buffer.writeInteger(UInt8(ascii: "\\"))
            buffer.writeInteger(UInt8(ascii: "\\"))
            buffer.writeInteger(UInt8(ascii: "x"))
            Self.appendHex(raw, to: &buffer)
            Self.appendBE(UInt32(n), to: &canon)
            canon.append(contentsOf: raw)

        case .boolFromInteger:
            guard storage == SQLITE_INTEGER else { return mismatch(storage, "boolean (from 0/1)") }
            let v = sqlite3_column_int64(stmt, i)
            guard v == 0 || v == 1 else { return "integer \(v) is not a boolean 0/1" }
            appendBool(v == 1, into: &buffer)

        case .boolFromText:
            guard storage == SQLITE_TEXT, let p = Self.textPointer(stmt, i) else {
                return mismatch(storage, "boolean (from t/f)")
            }
            switch String(decoding: p, as: UTF8.self).lowercased() {
            case "t", "true": appendBool(true, into: &buffer)
            case "f", "false": appendBool(false, into: &buffer)
            default: return "text is not a boolean t/f/true/false"
            }

        case .timestampISO(let offset):
            guard storage == SQLITE_TEXT, let p = Self.textPointer(stmt, i) else {
                return mismatch(storage, "timestamptz (from ISO-8601 text)")
            }
            guard let micros = Timestamps.parseISO(p, defaultOffset: offset) else {
                return "text is not an ISO-8601 timestamp"
            }
            appendTimestamp(micros, into: &buffer)

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
            appendTimestamp(micros, into: &buffer)

        case .timestampUnixMillis:
            guard storage == SQLITE_INTEGER else { return mismatch(storage, "timestamptz (from unix milliseconds)") }
            let (micros, o) = sqlite3_column_int64(stmt, i).multipliedReportingOverflow(by: 1000)
            guard !o, micros >= Timestamps.minMicros, micros <= Timestamps.maxMicros else {
                return "unix time out of range"
            }
            appendTimestamp(micros, into: &buffer)

        case .date:
            guard storage == SQLITE_TEXT, let p = Self.textPointer(stmt, i) else { return mismatch(storage, "date") }
            guard let days = Timestamps.parseDate(p) else { return "text is not a YYYY-MM-DD date" }
            scratch.removeAll(keepingCapacity: true)
            Timestamps.formatDate(days: days, into: &scratch)
            buffer.writeBytes(scratch)
            Self.appendBE(UInt32(bitPattern: Int32(truncatingIfNeeded: days - Self.postgresEpochDays)), to: &canon)

        case .json:
            guard storage == SQLITE_TEXT else { return mismatch(storage, "jsonb") }
            let p = Self.textPointer(stmt, i) ?? UnsafeBufferPointer(start: nil, count: 0)
            if let reason = Self.validateUTF8(p) { return reason }
            guard let json = JSONCanonical.canonicalize(p) else { return "text is not valid JSON" }
            if let reason = json.withUnsafeBufferPointer({ Self.appendEscaped($0, to: &buffer) }) { return reason }
            canon.append(contentsOf: json)
            canon.append(0)
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

    private mutating func appendBool(_ v: Bool, into buffer: inout ByteBuffer) {
        buffer.writeInteger(v ? UInt8(ascii: "t") : UInt8(ascii: "f"))
        canon.append(v ? 1 : 0)
    }

    private mutating func appendTimestamp(_ micros: Int64, into buffer: inout ByteBuffer) {
        scratch.removeAll(keepingCapacity: true)
        Timestamps.format(micros: micros, into: &scratch)
        buffer.writeBytes(scratch)
        Self.appendBE(UInt64(bitPattern: micros - Self.postgresEpochMicros), to: &canon)
    }

    /// Appends `v` big-endian, as PostgreSQL's `int8send`/`int4send` do.
    @inline(__always)
    static func appendBE<T: FixedWidthInteger & UnsignedInteger>(_ v: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) }
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
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: n * 2) { dst in
            var i = 0
            var j = 0
            while i < n {
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
