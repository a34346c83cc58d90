import Foundation
import Hummingbird
import Shared

/// The coordinator's health as `/health` and `/health/deep` report it.
public struct CoordinatorHealth: Codable, Sendable, Equatable {
    /// Why the coordinator is degraded.
    public struct Degradation: Codable, Sendable, Equatable {
        public var component: String
        public var reason: String
    }
    public struct DatabaseStatus: Codable, Sendable, Equatable {
        public var reachable: Bool
        public var roundTripMilliseconds: Double?
        public var schemaVersion: Int?
        public var expectedSchemaVersion: Int
    }
    public struct HeartbeatStatus: Codable, Sendable, Equatable {
        public var pending: Int
        public var flushes: Int
        public var rowsWritten: Int
        public var failedFlushes: Int
    }

    /// `ok` or `degraded`.
    public var status: String
    public var version: String
    public var degraded: [Degradation]
    public var database: DatabaseStatus?
    public var agentSessions: Int?
    public var heartbeats: HeartbeatStatus?
}

/// `GET /health` (liveness plus a quick database check; always 200) and `GET /health/deep` (database round trip,
/// schema version, agent sessions, heartbeat queue; 503 when degraded). Neither needs authentication.
struct HealthRoutes {
    let dependencies: AdminDependencies

    func register(on router: Router<AdminRequestContext>) {
        router.get("health") { _, _ -> Response in
            var health = await check(deep: false)
            health.database = nil
            return try .json(health)
        }
        router.get("health/deep") { _, _ -> Response in
            let health = await check(deep: true)
            var response = try Response.json(health, status: health.status == "ok" ? .ok : .serviceUnavailable)
            if health.status != "ok" { response.headers[.retryAfter] = "\(AdminError.retryAfterSeconds)" }
            return response
        }
    }

    func check(deep: Bool) async -> CoordinatorHealth {
        var degraded: [CoordinatorHealth.Degradation] = []
        var db = CoordinatorHealth.DatabaseStatus(
            reachable: false, expectedSchemaVersion: SchemaMigrations.latestVersion)
        var database = dependencies.database
        database.queryTimeout = deep ? .seconds(3) : .seconds(1)
        do {
            let rtt = try await database.ping()
            db.reachable = true
            db.roundTripMilliseconds = Double(rtt.components.attoseconds) / 1e15 + Double(rtt.components.seconds) * 1e3
            if deep {
                let version = try await SchemaMigrations.currentVersion(on: database, logger: database.logger)
                db.schemaVersion = version
                if version != SchemaMigrations.latestVersion {
                    degraded.append(
                        .init(
                            component: "database",
                            reason: "schema version \(version), expected \(SchemaMigrations.latestVersion)"))
                }
            }
        } catch {
            let message = (error as? MusterError)?.message ?? "\(error)"
            degraded.append(.init(component: "database", reason: message))
        }
        let stats = dependencies.nodes.heartbeats.statistics
        if stats.pending > 0 && !db.reachable {
            degraded.append(
                .init(component: "heartbeats", reason: "\(stats.pending) heartbeats queued until the database returns"))
        }
        return CoordinatorHealth(
            status: degraded.isEmpty ? "ok" : "degraded", version: MusterVersion.current, degraded: degraded,
            database: db, agentSessions: deep ? await dependencies.sessionCount() : nil,
            heartbeats: deep
                ? .init(
                    pending: stats.pending, flushes: stats.flushes, rowsWritten: stats.rowsWritten,
                    failedFlushes: stats.failedFlushes) : nil)
    }
}
