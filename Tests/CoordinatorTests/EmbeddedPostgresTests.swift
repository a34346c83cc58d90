import Foundation
import Logging
import PostgresNIO
import Shared
import TestSupport
import Testing

@testable import Coordinator

@Suite("Embedded PostgreSQL (real initdb and postgres)", .serialized)
struct EmbeddedPostgresTests {
    @Test func startsAcceptsConnectionsStopsAndRestartsOnTheSameDataDirectory() async throws {
        let state = try TestCoordinator.temporaryDirectory("muster-embedded")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let configuration = EmbeddedPostgres.Configuration(directory: "\(state)/pg")
        for round in 1...2 {
            let server = EmbeddedPostgres(configuration: configuration, logger: TestDatabase.logger)
            try await server.start()
            let pid = try #require(server.pid)
            // Unix socket only.
            let settings = try await Self.query(server, "SELECT current_setting('listen_addresses')")
            #expect(settings == "")
            if round == 1 {
                _ = try await Self.query(server, "CREATE TABLE survives (x int)")
            } else {
                // Same data directory: what round 1 created is still there.
                #expect(try await Self.query(server, "SELECT to_regclass('survives')::text") == "survives")
            }
            await server.stopAndWait()
            #expect(kill(pid, 0) != 0, "postgres (pid \(pid)) must have exited")
            #expect(!FileManager.default.fileExists(atPath: "\(configuration.dataDirectory)/postmaster.pid"))
        }
    }

    @Test(.requiresRoot) func dataDirectoryOwnedBySomeoneElseIsRefusedPrecisely() async throws {
        let state = try TestCoordinator.temporaryDirectory("muster-owner")
        defer { try? FileManager.default.removeItem(atPath: state) }
        // Running as root the server runs as `postgres`; a data directory owned by root is someone else's.
        try FileManager.default.createDirectory(atPath: "\(state)/pg/data", withIntermediateDirectories: true)
        let account = try EmbeddedPostgres.serverAccount()
        chown("\(state)/pg", account.uid, account.gid)
        let server = EmbeddedPostgres(configuration: .init(directory: "\(state)/pg"), logger: TestDatabase.logger)
        await #expect {
            try await server.start()
        } throws: { error in
            guard let error = error as? MusterError else { return false }
            return error.code == .io && error.message.contains("\(state)/pg/data is owned by root")
                && error.message.contains("runs as postgres") && (error.hint ?? "").contains("chown -R postgres")
        }
        #expect(server.pid == nil)
    }

    static func query(_ server: EmbeddedPostgres, _ sql: String) async throws -> String {
        let database = Database(configuration: server.databaseConfiguration, logger: TestDatabase.logger)
        return try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask { await database.client.run(); return nil }
            defer { group.cancelAll() }
            return try await database.withConnection("test query") { connection in
                let rows = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: TestDatabase.logger)
                var out = ""
                for try await value in rows.decode(String?.self) { out = value ?? "" }
                return out
            }
        }
    }
}
