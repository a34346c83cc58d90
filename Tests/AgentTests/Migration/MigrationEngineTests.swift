import Foundation
import PostgresNIO
import Shared
import TestSupport
import Testing

@testable import Agent

/// End-to-end migrations against a real PostgreSQL, one database per test.
extension MigrationTests {
    @Suite("engine against real PostgreSQL")
    struct MigrationEngineTests {
        @Test func largeTableIsCopiedInKeyRangeChunks() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE big (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, s TEXT, doc JSON);
                CREATE INDEX big_k ON big(k);
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
                  INSERT INTO big SELECT i * 3 - 1000, i % 17, 'row ' || i || char(9) || 'x', '{"i": ' || i || '}' FROM n;
                UPDATE big SET k = 'not a number' WHERE id IN (2, 3500, 6497);
                CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT);
                INSERT INTO small VALUES (1, 'a'), (2, 'b');
                """)
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let plan = try SQLiteSchema.read(from: SQLiteDatabase(path: src.path)).tables.first { $0.name == "big" }
            let ranges = try MigrationEngine.chunkRanges(
                TablePlan(sourcePath: src.path, table: try #require(plan), schema: "public", casts: []),
                readPath: src.path, chunkRows: 300)
            #expect(ranges.count == 9)
            #expect(ranges.first??.lowerBound == -997 && ranges.last??.upperBound == 6500)
            for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a!.upperBound + 1 == b!.lowerBound) }

            let report = try await migrate(src, db, jobs: 3, chunkRows: 300)
            #expect(report.exitCode == 1, "three error rows")
            let big = try #require(report.tables.first { $0.table == "big" })
            #expect(big.rowsRead == 2500)
            #expect(big.rowsWritten == 2497)
            #expect(big.errorRows == 3)
            #expect(big.verified == true)
            #expect(report.errorRows.map(\.key) == ["2", "3500", "6497"])
            #expect(try await db.query("SELECT count(*) FROM big") == "2497")
            #expect(try await db.query("SELECT count(*) FROM pg_indexes WHERE tablename = 'big'") == "2")
            #expect(try await db.query("SELECT obj_description('big'::regclass, 'pg_class') LIKE '%:verified:%'") == "t")
        }

        @Test func everyTypeAndCastRoundTrips() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE things (
                  id INTEGER PRIMARY KEY,
                  n INTEGER NOT NULL DEFAULT 7,
                  r REAL,
                  price NUMERIC,
                  label TEXT NOT NULL DEFAULT 'none',
                  note VARCHAR(20),
                  data BLOB,
                  flag BOOLEAN NOT NULL DEFAULT 0,
                  tflag TEXT,
                  at DATETIME,
                  local_at TEXT,
                  unix_s INTEGER,
                  unix_ms INTEGER,
                  day DATE,
                  doc JSON,
                  raw_json TEXT
                );
                INSERT INTO things VALUES (1, -9223372036854775808, 0.1, 12.50, 'naïve 東京 🚀', 'tab\tnew\nline\\back',
                  x'00ff10', 1, 't', '2024-02-29T23:59:59.123456Z', '2024-01-01 10:00:00', 1700000000, 1700000000123,
                  '2024-02-29', '{"b": 1, "a": [1, 2.50, 1e2], "aa": "x\\u00e9\\n"}', '{"z":null,"y":true}');
                INSERT INTO things VALUES (2, 9223372036854775807, 1e-300, 3, '', NULL, x'', 0, 'false',
                  '2023-06-01 12:30+02:00', '2024-01-01T10:00', -1, 0, '1999-12-31', '[]', '"just a string"');
                INSERT INTO things (id, label) VALUES (3, 'defaults and nulls');
                """)
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let report = try await migrate(
                src, db,
                casts: ["things.tflag:boolean:tf", "things.local_at:timestamptz:iso+02:00", "things.unix_s:timestamptz:unix",
                        "things.unix_ms:timestamptz:unixms", "things.raw_json:jsonb"])
            #expect(report.exitCode == 0, "\(report.renderTable())")
            #expect(report.tables.map(\.verified) == [true])
            #expect(report.tables[0].rowsWritten == 3)

            let types = try await db.query(
                "SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable, ', ' ORDER BY ordinal_position) "
                    + "FROM information_schema.columns WHERE table_name = 'things'")
            #expect(types.contains("id bigint NO"))
            #expect(types.contains("r double precision YES"))
            #expect(types.contains("price numeric YES"))
            #expect(types.contains("label text NO"))
            #expect(types.contains("data bytea YES"))
            #expect(types.contains("flag boolean NO"))
            #expect(types.contains("at timestamp with time zone YES"))
            #expect(types.contains("day date YES"))
            #expect(types.contains("doc jsonb YES"))
            #expect(types.contains("tflag boolean YES"))

            let row1 = try await db.query(
                "SET TimeZone = 'UTC'; SELECT n, r, price, label, note, encode(data, 'hex'), flag, tflag, at, local_at, unix_s, "
                    + "unix_ms, day, doc, raw_json FROM things WHERE id = 1")
            #expect(
                row1 == "-9223372036854775808|0.1|12.5|naïve 東京 🚀|tab\tnew\nline\\back|00ff10|t|t|"
                    + "2024-02-29 23:59:59.123456+00|2024-01-01 08:00:00+00|2023-11-14 22:13:20+00|"
                    + "2023-11-14 22:13:20.123+00|2024-02-29|{\"a\": [1, 2.50, 100], \"b\": 1, \"aa\": \"xé\\n\"}|"
                    + "{\"y\": true, \"z\": null}")
            let row2 = try await db.query("SET TimeZone = 'UTC'; SELECT r = 1e-300, tflag, at, unix_s, doc, raw_json FROM things WHERE id = 2")
            #expect(row2 == "t|f|2023-06-01 10:30:00+00|1969-12-31 23:59:59+00|[]|\"just a string\"")
            let row3 = try await db.query("SELECT n, label, flag, r IS NULL, data IS NULL FROM things WHERE id = 3")
            #expect(row3 == "7|defaults and nulls|f|t|t")
            // Defaults kept, REAL kept as double precision, identity continues after the highest id.
            #expect(try await db.query("INSERT INTO things (label) VALUES ('next') RETURNING id, n, flag") == "4|7|f")
        }

        @Test func foreignKeysCompositeKeysAndAwkwardIdentifiers() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                PRAGMA foreign_keys = ON;
                CREATE TABLE "Customer Accounts" ("Account ID" INTEGER PRIMARY KEY AUTOINCREMENT, "UserName" TEXT NOT NULL UNIQUE,
                  "select" TEXT, "Order" INTEGER);
                CREATE TABLE "order" (customer INTEGER NOT NULL REFERENCES "Customer Accounts"("Account ID") ON DELETE CASCADE,
                  line INTEGER NOT NULL, "from" TEXT, PRIMARY KEY (customer, line));
                CREATE INDEX "order by from" ON "order"("from");
                INSERT INTO "Customer Accounts" VALUES (1, 'Zoë', 'x', 1), (2, 'Émile', NULL, 2), (40, 'Ωmega', 'y', NULL);
                DELETE FROM "Customer Accounts" WHERE "Account ID" = 40;
                INSERT INTO "order" VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, NULL);
                """)
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let report = try await migrate(src, db, schema: "Mixed Case")
            #expect(report.exitCode == 0, "\(report.renderTable())")
            #expect(try await db.query("SELECT count(*) FROM \"Mixed Case\".\"order\"") == "3")
            let constraints = try await db.query(
                "SELECT string_agg(contype::text || ':' || conrelid::regclass::text, ',' ORDER BY contype, conrelid::regclass::text) "
                    + "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'Mixed Case' "
                    + "AND contype IN ('p', 'f')")
            #expect(constraints == "f:\"Mixed Case\".\"order\",p:\"Mixed Case\".\"Customer Accounts\",p:\"Mixed Case\".\"order\"")
            let indexes = try await db.query(
                "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'Mixed Case'")
            #expect(indexes.contains("order by from"))
            #expect(indexes.contains("Customer Accounts_UserName_key"))
            // AUTOINCREMENT never reuses ids: the sequence continues after SQLite's counter (40), not max(id) (2).
            #expect(
                try await db.query("INSERT INTO \"Mixed Case\".\"Customer Accounts\" (\"UserName\") VALUES ('new') RETURNING \"Account ID\"")
                    == "41")
            // The foreign key is enforced, with its ON DELETE action.
            _ = try await db.query("DELETE FROM \"Mixed Case\".\"Customer Accounts\" WHERE \"Account ID\" = 1")
            #expect(try await db.query("SELECT count(*) FROM \"Mixed Case\".\"order\"") == "1")
        }

        @Test func emptyAndMillionRowTables() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE empty (id INTEGER PRIMARY KEY, v TEXT);
                CREATE TABLE big (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, s TEXT NOT NULL, r REAL);
                WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000000)
                  INSERT INTO big SELECT i, i * 7 % 1000, 'row ' || i, i / 3.0 FROM c;
                """)
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let report = try await migrate(src, db)
            #expect(report.exitCode == 0, "\(report.renderTable())")
            let big = try #require(report.tables.first { $0.table == "big" })
            #expect(big.rowsRead == 1_000_000 && big.rowsWritten == 1_000_000 && big.verified == true)
            let empty = try #require(report.tables.first { $0.table == "empty" })
            #expect(empty.rowsWritten == 0 && empty.verified == true)
            #expect(try await db.query("SELECT count(*), sum(k), max(id) FROM big") == "1000000|499500000|1000000")
            #expect(try await db.query("INSERT INTO empty (v) VALUES ('a') RETURNING id") == "1")
        }

        @Test func rerunSkipsVerifiedTablesAndTablesSubset() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);
                CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT);
                INSERT INTO a VALUES (1, 'x'), (2, 'y');
                INSERT INTO b VALUES (1, 'z');
                """)
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let first = try await migrate(src, db, tables: ["a"])
            #expect(first.exitCode == 0)
            #expect(first.tables.map(\.table) == ["a"])
            #expect(try await db.query("SELECT to_regclass('public.b') IS NULL") == "t")

            let second = try await migrate(src, db)
            #expect(second.exitCode == 0, "\(second.renderTable())")
            #expect(second.tables.first { $0.table == "a" }?.action == .skip)
            #expect(second.tables.first { $0.table == "b" }?.action == .create)
            let third = try await migrate(src, db)
            #expect(third.exitCode == 0)
            #expect(third.tables.allSatisfy { $0.action == .skip })
            #expect(try await db.query("SELECT (SELECT count(*) FROM a) || ',' || (SELECT count(*) FROM b)") == "2,1")
        }

        @Test func dryRunWritesNothing() async throws {
            let src = try SQLiteFixture()
            try src.exec("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO a VALUES (1, 'x');")
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let report = try await migrate(src, db, dryRun: true)
            #expect(report.exitCode == 0)
            #expect(report.ddl.first?.contains("CREATE TABLE \"public\".\"a\"") == true)
            #expect(try await db.query("SELECT to_regclass('public.a') IS NULL") == "t")
        }

        @Test func tableWithoutPrimaryKeyIsVerifiedByFullRows() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE log (at TEXT, msg TEXT, n INTEGER);
                INSERT INTO log VALUES ('x', 'same', 1), ('x', 'same', 1), (NULL, 'other', NULL), ('y', NULL, 2);
                """)
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            let report = try await migrate(src, db)
            #expect(report.exitCode == 0)
            #expect(report.tables[0].verified == true && report.tables[0].rowsWritten == 4)
            #expect(report.tables[0].ordering.contains("no primary key"))
            #expect(report.renderTable().contains("no primary key"))
        }

        @Test func verificationNamesTheFirstDifferingKey() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
                WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100) INSERT INTO t SELECT i, 'v' || i FROM c;
                """)
            let db = try TargetDatabase()
            defer { db.dropInBackground() }
            #expect(try await migrate(src, db).exitCode == 0)
            // Tamper with the target, then have the table reloaded as partial: mark it so, but change data after.
            let plan = try #require(
                SQLiteSchema.read(from: SQLiteDatabase(path: src.path)).tables.first.map {
                    TablePlan(sourcePath: src.path, table: $0, schema: "public", casts: [])
                })
            _ = try await db.query("UPDATE t SET v = 'changed' WHERE id IN (42, 77)")
            let diff = try await withConnection(db) { conn in
                try await Verifier.firstDifference(plan, readPath: src.path, connection: conn, logger: .init(label: "t"))
            }
            #expect(diff == "(42)")
        }

        private func withConnection<T>(_ db: TargetDatabase, _ body: (PostgresConnection) async throws -> T) async throws -> T {
            let target = try PostgresTarget(url: db.url)
            let conn = try await target.connect(logger: .init(label: "test"))
            do {
                let r = try await body(conn)
                try await conn.close()
                return r
            } catch {
                try? await conn.close()
                throw error
            }
        }
    }
}
