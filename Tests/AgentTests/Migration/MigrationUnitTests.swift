import Foundation
import NIOCore
import Shared
import TestSupport
import Testing

@testable import Agent

extension MigrationTests {
    @Suite("parsing and canonical forms")
    struct MigrationUnitTests {
        @Test func castRulesParseAndRoundTrip() throws {
            let r = try CastRule(parsing: "my.table.col:timestamptz:iso+02:00")
            #expect(r.table == "my.table" && r.column == "col" && r.conversion == .timestampISO(offsetSeconds: 7200))
            #expect(r.description == "my.table.col:timestamptz:iso+02:00")
            #expect(try CastRule(parsing: "t.c:boolean:tf").conversion == .boolFromText)
            #expect(try CastRule(parsing: "t.c:timestamptz:unixms").conversion == .timestampUnixMillis)
            #expect(throws: MusterError.self) { try CastRule(parsing: "t.c:money") }
            #expect(throws: MusterError.self) { try CastRule(parsing: "t.c:boolean:yes") }
            let spec = MigrationSpec(databases: ["a.db"], target: "postgres://x@y/z", casts: [r])
            let decoded = try JSONDecoder().decode(MigrationSpec.self, from: JSONEncoder().encode(spec))
            #expect(decoded == spec)
        }

        @Test func defaultTypeMapping() {
            #expect(TypeMapping.map(declared: "INTEGER").0 == .bigint)
            #expect(TypeMapping.map(declared: "unsigned big int").0 == .bigint)
            #expect(TypeMapping.map(declared: "REAL").0 == .doublePrecision)
            #expect(TypeMapping.map(declared: "double precision").0 == .doublePrecision)
            #expect(TypeMapping.map(declared: "DECIMAL(10,2)").0 == .numeric)
            #expect(TypeMapping.map(declared: "varchar(20)").0 == .text)
            #expect(TypeMapping.map(declared: "").0 == .text)
            #expect(TypeMapping.map(declared: "BLOB").0 == .bytea)
            #expect(TypeMapping.map(declared: "boolean").0 == .boolean)
            #expect(TypeMapping.map(declared: "DATETIME").0 == .timestamptz)
            #expect(TypeMapping.map(declared: "json").0 == .jsonb)
            #expect(TypeMapping.translateDefault("'it''s'", type: .text) == "'it''s'::text")
            #expect(TypeMapping.translateDefault("1", type: .boolean) == "true")
            #expect(TypeMapping.translateDefault("CURRENT_TIMESTAMP", type: .timestamptz) == "CURRENT_TIMESTAMP")
            #expect(TypeMapping.translateDefault("(strftime('%s','now'))", type: .bigint) == nil)
        }

        @Test func timestampsParseAndFormatLikePostgres() {
            func parse(_ s: String, offset: Int = 0) -> Int64? {
                Array(s.utf8).withUnsafeBufferPointer { Timestamps.parseISO($0, defaultOffset: offset) }
            }
            func format(_ m: Int64) -> String {
                var out: [UInt8] = []
                Timestamps.format(micros: m, into: &out)
                return String(decoding: out, as: UTF8.self)
            }
            #expect(parse("1970-01-01") == 0)
            #expect(parse("1970-01-01T00:00:01Z") == 1_000_000)
            #expect(parse("1970-01-01 01:00:00+01:00") == 0)
            #expect(parse("1970-01-01 01:00", offset: 3600) == 0)
            #expect(parse("2024-02-29T12:00:00.1234567Z").map(format) == "2024-02-29 12:00:00.123457+00")
            #expect(parse("2023-02-29") == nil)
            #expect(parse("2023-01-01T25:00") == nil)
            #expect(parse("yesterday") == nil)
            #expect(format(-1) == "1969-12-31 23:59:59.999999+00")
            #expect(format(Timestamps.minMicros) == "0001-01-01 00:00:00+00")
            #expect(format(1_700_000_000_120_000) == "2023-11-14 22:13:20.12+00")
        }

        @Test func decimalNormalisationMatchesNumericOutput() {
            func norm(_ s: String) -> String? {
                Array(s.utf8).withUnsafeBufferPointer { DecimalText.normalize($0) }.map { String(decoding: $0, as: UTF8.self) }
            }
            #expect(norm("1e2") == "100")
            #expect(norm("1.50") == "1.50")
            #expect(norm("1.5e3") == "1500")
            #expect(norm("1e-3") == "0.001")
            #expect(norm("100e-2") == "1.00")
            #expect(norm("-0.0") == "0.0")
            #expect(norm("+007") == "7")
            #expect(norm(".5") == "0.5")
            #expect(norm("1e5000") == nil)
            #expect(norm("abc") == nil)
        }

        /// The JSON canonical form must equal PostgreSQL's `jsonb::text`, or verification would report false mismatches.
        @Test func jsonCanonicalFormEqualsPostgresJsonbText() async throws {
            let samples = [
                #"{"b": 1, "a": 2, "aa": 3, "a": 4}"#, #"[1, 2.50, 1e2, -0, 1E-2, 0.000]"#, #"  "x\u00e9\n\"\\\/\t"  "#,
                #"{"nested": {"z": [true, false, null], "": {}}, "emoji": "🚀\ud83d\ude80"}"#, #"[]"#, #"{}"#, #"123456789012345678901234567890"#,
                #"{"ctl": "\u0001\u001f"}"#,
                #"{"repo": "golden/72", "ref": "refs/heads/release", "env": {"CI": "1", "LANG": "C.UTF-8"}, "args": ["x"]}"#,
                #"{"b": {"yy": -0, "x": [-0, 0, -12, 3.0]}, "a": "pl/ain é", "aa": "esc\"aped", "a": "last"}"#, "-0", #""a\/b""#,
            ]
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            for s in samples {
                let mine = try #require(Array(s.utf8).withUnsafeBufferPointer { JSONCanonical.canonicalize($0) })
                let pg = try await db.query("SELECT \(pgLiteral(s))::jsonb::text")
                #expect(String(decoding: mine, as: UTF8.self) == pg, "\(s)")
            }
            for bad in [#"{"a": }"#, #"[1,]"#, #"01"#, #""\u0000""#, #"{"a" 1}"#, "nul", #""\ud800""#, "[1] x"] {
                #expect(Array(bad.utf8).withUnsafeBufferPointer { JSONCanonical.canonicalize($0) } == nil, "\(bad)")
            }
        }

        /// The word-at-a-time COPY escaping equals a byte-by-byte reference wherever the special bytes fall.
        @Test func copyTextEscapingMatchesAByteByByteReference() {
            func reference(_ bytes: [UInt8]) -> [UInt8] {
                var out: [UInt8] = []
                for b in bytes {
                    switch b {
                    case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
                    case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
                    case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
                    case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
                    default: out.append(b)
                    }
                }
                return out
            }
            let specials: [[UInt8]] = [[0x09], [0x0A], [0x0D], [0x5C], Array("é".utf8), Array("🚀".utf8), [0x7F], [0x1F], [0x20]]
            for length in 0..<40 {
                for special in specials {
                    for position in stride(from: 0, through: length, by: 3) {
                        var bytes = Array(repeating: UInt8(ascii: "a"), count: length)
                        bytes.insert(contentsOf: special, at: position)
                        var buffer = ByteBuffer()
                        let problem = bytes.withUnsafeBufferPointer { RowEncoder.appendEscaped($0, to: &buffer) }
                        #expect(problem == nil)
                        #expect(Array(buffer.readableBytesView) == reference(bytes), "\(bytes)")
                    }
                }
            }
            for bad: [UInt8] in [Array(repeating: 0x61, count: 17) + [0], Array(repeating: 0x61, count: 9) + [0xFF, 0x61]] {
                var buffer = ByteBuffer()
                #expect(bad.withUnsafeBufferPointer { RowEncoder.appendEscaped($0, to: &buffer) } != nil)
            }
        }

        /// Values from PostgreSQL 15: `SELECT hashtextextended('', 0), hashtextextended('a', 0),
        /// hashtextextended('abcdefghijklm', 7), hashtextextended('abcdefghijkl', 1234567890123),
        /// hashint8extended(-5, 3), hashint8extended(123456789012, 0)`.
        @Test func hashesMatchPostgres() {
            func text(_ s: String, _ seed: Int64) -> Int64 {
                Int64(bitPattern: Array(s.utf8).withUnsafeBufferPointer { PGHash.bytes($0, seed: UInt64(bitPattern: seed)) })
            }
            #expect(text("", 0) == -6_939_563_903_564_495_251)
            #expect(text("a", 0) == 3_591_986_179_850_072_241)
            #expect(text("abcdefghijklm", 7) == 1_223_120_994_160_335_261)
            #expect(text("abcdefghijkl", 1_234_567_890_123) == -3_980_814_378_139_526_906)
            #expect(Int64(bitPattern: PGHash.int64(-5, seed: 3)) == 4_566_310_048_417_840_633)
            #expect(Int64(bitPattern: PGHash.int64(123_456_789_012, seed: 0)) == 5_990_271_995_538_752_477)
        }

        @Test func postgresURLParsing() throws {
            let t = try PostgresTarget(url: "postgres://me:p%40ss@db.example:6543/app?sslmode=disable")
            #expect(t.user == "me" && t.password == "p@ss" && t.host == "db.example" && t.port == 6543 && t.database == "app")
            #expect(!t.display.contains("p@ss"))
            #expect(throws: MusterError.self) { try PostgresTarget(url: "mysql://x@y/z") }
        }
    }
}
