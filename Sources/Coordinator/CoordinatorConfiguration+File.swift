import ArgumentParser
import Foundation
import Logging
import Shared

/// Loading ``CoordinatorConfiguration`` from a JSON file, the environment and flags (later wins).
///
/// Keys (file key / environment variable / flag; type; default):
/// - `stateDir` / `MUSTER_STATE_DIR` / `--state-dir`; path; `/var/lib/muster`
/// - `databaseURL` / `MUSTER_DATABASE_URL` / `--database-url`; `postgres://…`; none (embedded PostgreSQL)
/// - `databaseBootTimeout` / `MUSTER_DATABASE_BOOT_TIMEOUT` / `--database-boot-timeout`; duration; `30s`
/// - `listen` / `MUSTER_LISTEN` / `--listen`; `HOST:PORT` of the agent listener; `0.0.0.0:7400`
/// - `adminListen` / `MUSTER_ADMIN_LISTEN` / `--admin-listen`; `HOST:PORT` of the admin API; `0.0.0.0:7401`
/// - `advertise` / `MUSTER_ADVERTISE` / `--advertise`; host agents dial; the hostname
/// - `heartbeatInterval` / `MUSTER_HEARTBEAT_INTERVAL` / `--heartbeat-interval`; duration; `10s` (minimum interval)
/// - `heartbeatGrace` / `MUSTER_HEARTBEAT_GRACE` / `--heartbeat-grace`; duration; `20s`
/// - `failoverGrace` / `MUSTER_FAILOVER_GRACE` / `--failover-grace`; duration; `5m`
/// - `heartbeatBudget` / `MUSTER_HEARTBEAT_BUDGET` / `--heartbeat-budget`; heartbeats/s; `50`
/// - `logLevel` / `MUSTER_LOG_LEVEL` / `--log-level`; trace…critical; `info`
///
/// Durations are written `500ms`, `2s`, `5m`, `1h`, `7d`.
extension CoordinatorConfiguration {
    /// The optional values of a source (file, environment or flags).
    public struct Overrides: Codable, Sendable, Equatable {
        public var stateDir: String?
        public var databaseURL: String?
        public var databaseBootTimeout: String?
        public var listen: String?
        public var adminListen: String?
        public var advertise: String?
        public var heartbeatInterval: String?
        public var heartbeatGrace: String?
        public var failoverGrace: String?
        public var heartbeatBudget: Double?
        public var logLevel: String?

        public init() {}

        /// Reads `MUSTER_*` variables.
        public init(environment: [String: String]) {
            func value(_ name: String) -> String? {
                guard let v = environment[name], !v.isEmpty else { return nil }
                return v
            }
            stateDir = value("MUSTER_STATE_DIR")
            databaseURL = value("MUSTER_DATABASE_URL")
            databaseBootTimeout = value("MUSTER_DATABASE_BOOT_TIMEOUT")
            listen = value("MUSTER_LISTEN")
            adminListen = value("MUSTER_ADMIN_LISTEN")
            advertise = value("MUSTER_ADVERTISE")
            heartbeatInterval = value("MUSTER_HEARTBEAT_INTERVAL")
            heartbeatGrace = value("MUSTER_HEARTBEAT_GRACE")
            failoverGrace = value("MUSTER_FAILOVER_GRACE")
            heartbeatBudget = value("MUSTER_HEARTBEAT_BUDGET").flatMap(Double.init)
            logLevel = value("MUSTER_LOG_LEVEL")
        }

        /// Reads a JSON file with the keys above.
        /// - Throws: ``MusterError`` `.invalidInput` naming the file.
        public init(file path: String) throws {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw MusterError(.invalidInput, "cannot read the configuration file \(path)")
            }
            do {
                self = try JSONDecoder().decode(Overrides.self, from: data)
            } catch {
                throw MusterError(.invalidInput, "the configuration file \(path) is not valid: \(error)")
            }
        }
    }

    /// Applies overrides on top of `self`.
    /// - Throws: ``MusterError`` `.usage` for a malformed value, naming the key.
    public mutating func apply(_ o: Overrides) throws {
        if let v = o.stateDir { stateDirectory = v }
        if let v = o.databaseURL { databaseURL = v }
        if let v = o.databaseBootTimeout { databaseBootTimeout = try Self.duration(v, key: "databaseBootTimeout") }
        if let v = o.listen { agentListen = try ListenAddress(parsing: v, option: "listen") }
        if let v = o.adminListen { adminListen = try ListenAddress(parsing: v, option: "adminListen") }
        if let v = o.advertise { advertise = v }
        if let v = o.heartbeatInterval {
            heartbeats.minimumInterval = try Self.duration(v, key: "heartbeatInterval")
            guard heartbeats.minimumInterval > .zero else {
                throw MusterError(.usage, "heartbeatInterval must be positive")
            }
        }
        if let v = o.heartbeatGrace { heartbeats.grace = try Self.duration(v, key: "heartbeatGrace") }
        if let v = o.failoverGrace { heartbeats.failoverGrace = try Self.duration(v, key: "failoverGrace") }
        if let v = o.heartbeatBudget {
            guard v > 0, v.isFinite else { throw MusterError(.usage, "heartbeatBudget must be a positive number") }
            heartbeats.budgetPerSecond = v
        }
        if let v = o.logLevel {
            guard let level = Logger.Level(rawValue: v) else {
                throw MusterError(.usage, "logLevel '\(v)' is not one of trace, debug, info, notice, warning, error, critical")
            }
            logLevel = level
        }
    }

    /// Parses `500ms`, `2s`, `5m`, `1h`, `7d` (fractions allowed).
    /// - Throws: ``MusterError`` `.usage` naming the key.
    public static func duration(_ text: String, key: String) throws -> Duration {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, seconds) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            if suffix == "s", number.hasSuffix("m") { continue }
            if let value = Double(number), value >= 0, value.isFinite {
                return .milliseconds(Int64((value * seconds * 1000).rounded()))
            }
        }
        throw MusterError(.usage, "\(key) '\(text)' is not a duration", hint: "use e.g. 500ms, 2s, 5m, 1h, 7d")
    }
}
