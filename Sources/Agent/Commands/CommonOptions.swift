import ArgumentParser
import Foundation
import Logging
import Shared

/// Options every agent command takes.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "State directory (identity, modules). Env: MUSTER_STATE_DIR.")
    var stateDir: String =
        ProcessInfo.processInfo.environment["MUSTER_STATE_DIR"] ?? AgentConfiguration.defaultStateDirectory

    @Option(name: .long, help: "trace, debug, info, notice, warning, error, critical. Env: MUSTER_LOG_LEVEL.")
    var logLevel: String = ProcessInfo.processInfo.environment["MUSTER_LOG_LEVEL"] ?? "info"

    @Option(name: .long, help: "Never heartbeat faster than this (e.g. 100ms, 1s), whatever the coordinator assigns.")
    var heartbeatMin: String = "100ms"

    @Option(name: .long, help: "The service manager volume units go to: system or user.")
    var systemd: String = "system"

    @Option(name: .long, help: "Where volume .mount units are written.")
    var unitDirectory: String = "/etc/systemd/system"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        _ = try DurationArgument.parse(heartbeatMin, option: "--heartbeat-min")
        guard systemd == "system" || systemd == "user" else { throw ValidationError("--systemd must be system or user") }
        guard unitDirectory.hasPrefix("/") else { throw ValidationError("--unit-directory must be an absolute path") }
    }

    func configuration() throws -> AgentConfiguration {
        var configuration = AgentConfiguration(
            stateDirectory: stateDir, logLevel: Logger.Level(rawValue: logLevel) ?? .info,
            minimumHeartbeatInterval: try DurationArgument.parse(heartbeatMin, option: "--heartbeat-min"))
        configuration.userManager = systemd == "user"
        configuration.unitDirectory = unitDirectory
        return configuration
    }

    /// Sets up swift-log once per process and returns the agent's logger.
    func bootstrapLogging() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "muster-agent")
        logger.logLevel = level
        return logger
    }
}

/// Parses durations like `200ms`, `1s`, `1.5s`, `5m`, `1h`.
enum DurationArgument {
    static func parse(_ text: String, option: String) throws -> Duration {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, seconds) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            if suffix == "s", number.hasSuffix("m") { continue }
            if let value = Double(number), value >= 0, value.isFinite {
                return .milliseconds(Int64((value * seconds * 1000).rounded()))
            }
        }
        throw MusterError(.usage, "\(option) '\(text)' is not a duration", hint: "use e.g. 200ms, 1s, 5m, 1h")
    }
}
