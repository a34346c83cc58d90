import Shared
import Foundation
import PostgresNIO
import Testing

@testable import Coordinator

@Suite("Schema migrations (real PostgreSQL)")
struct SchemaMigrationsTests {
    @Test func appliesOnceEvenWhenTwoCoordinatorsMigrateConcurrently() async throws {
        try await TestDatabase.with(migrate: false) { database, name in
            let logger = TestDatabase.logger
            // Two concurrent runs: the advisory lock serialises them; exactly one applies every version.
            async let first = SchemaMigrations.apply(on: database, logger: logger)
            async let second = SchemaMigrations.apply(on: database, logger: logger)
            let results = try await [first, second]
            #expect(results.flatMap { $0 } == SchemaMigrations.all.map(\.version))
            #expect(try TestDatabase.psql(name, "SELECT count(*) FROM schema_migrations") == "\(SchemaMigrations.all.count)")
            #expect(try await SchemaMigrations.currentVersion(on: database, logger: logger) == SchemaMigrations.latestVersion)
            // A third run has nothing to do.
            #expect(try await SchemaMigrations.apply(on: database, logger: logger).isEmpty)
        }
    }

    @Test func nodesTableStaysHOTUpdatable() async throws {
        try await TestDatabase.with { _, name in
            let options = try TestDatabase.psql(name, "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = 'nodes'")
            #expect(options.contains("fillfactor=60"))
            let indexes = try TestDatabase.psql(name, "SELECT indexdef FROM pg_indexes WHERE tablename = 'nodes'")
            #expect(!indexes.contains("last_seen"))
        }
    }

    @Test func refusesADatabaseWithANewerSchema() async throws {
        try await TestDatabase.with { database, name in
            try TestDatabase.psql(name, "INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
            await #expect {
                try await SchemaMigrations.apply(on: database, logger: TestDatabase.logger)
            } throws: { error in
                (error as? MusterError)?.code == .conflict
            }
        }
    }
}
