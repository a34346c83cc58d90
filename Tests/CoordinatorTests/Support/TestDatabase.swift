import Foundation
import Logging
import PostgresNIO
import Shared
import TestSupport

@testable import Coordinator

/// A fresh database on the harness's PostgreSQL with a running ``Database`` pool, for one test.
enum TestDatabase {
    static let logger: Logger = {
        var logger = Logger(label: "muster.test")
        logger.logLevel = .warning
        return logger
    }()

    /// Creates a database, runs the pool while `body` runs, then shuts the pool down and drops the database.
    /// - Parameter migrate: Apply the schema first.
    static func with<T: Sendable>(
        migrate: Bool = true, _ body: @Sendable (Database, String) async throws -> T
    ) async throws -> T {
        let (name, url) = try PostgresHarness.makeDatabase(prefix: "coord")
        defer { PostgresHarness.dropDatabase(name) }
        let database = Database(configuration: try Database.Configuration(url: url), queryTimeout: .seconds(60), logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await database.client.run() }
            defer { group.cancelAll() }
            if migrate { try await SchemaMigrations.apply(on: database, logger: logger) }
            return try await body(database, name)
        }
    }

    /// Runs SQL through psql on the named database.
    @discardableResult
    static func psql(_ database: String, _ sql: String) throws -> String {
        try PostgresHarness.psql(try PostgresHarness.server(), database: database, sql: sql)
    }

    static func facts(_ hostname: String = "node-a") -> HostFacts {
        HostFacts(
            hostname: hostname, machineID: "0123456789abcdef0123456789abcdef", os: "Debian GNU/Linux 12",
            kernel: "6.18.0", cpuCount: 2, memoryBytes: 4 << 30, agentVersion: "0.1.0")
    }

    static func report(clock: Date = Date(), version: String = "0.1.0") -> HealthReport {
        HealthReport(
            load: [0.1, 0.2, 0.3], memoryTotalBytes: 4 << 30, memoryAvailableBytes: 2 << 30, diskTotalBytes: 10 << 30,
            diskFreeBytes: 5 << 30, uptimeSeconds: 1234, agentVersion: version, clock: clock)
    }

    static let pin = CAPin(spkiDER: Array("test-ca".utf8))
}
