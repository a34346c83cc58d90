import ArgumentParser
import Foundation
import Logging
import Shared

extension Muster {
    /// `muster serve`: runs the coordinator (agent listener, admin API, store; embedded PostgreSQL by default).
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "Run the coordinator. Without --database-url it runs its own PostgreSQL under <state-dir>/pg.")

        @Option(help: "A JSON configuration file (keys as in the documentation of CoordinatorConfiguration+File).")
        var config: String?
        @Option(help: "State directory: PKI, embedded PostgreSQL, admin.json. [default: /var/lib/muster]")
        var stateDir: String?
        @Option(help: "PostgreSQL URL, e.g. postgres://muster@db:5432/muster?sslmode=require.")
        var databaseUrl: String?
        @Option(help: "How long to wait for the database at start-up. [default: 30s]")
        var databaseBootTimeout: String?
        @Option(help: "Agent listener HOST:PORT. [default: 0.0.0.0:7400]")
        var listen: String?
        @Option(help: "Admin API HOST:PORT. [default: 0.0.0.0:7401]")
        var adminListen: String?
        @Option(help: "Host or address agents dial (join command, certificate). [default: hostname]")
        var advertise: String?
        @Option(help: "Shortest heartbeat interval assigned to agents. [default: 10s]")
        var heartbeatInterval: String?
        @Option(help: "Time after a missed heartbeat before a node is unreachable. [default: 20s]")
        var heartbeatGrace: String?
        @Option(help: "After start-up, nobody is marked unreachable for this long. [default: 5m]")
        var failoverGrace: String?
        @Option(help: "Cluster-wide heartbeats per second this coordinator aims for. [default: 50]")
        var heartbeatBudget: Double?
        @Option(help: "trace, debug, info, notice, warning, error or critical. [default: info]")
        var logLevel: String?

        func run() async throws {
            var configuration = CoordinatorConfiguration()
            if let config { try configuration.apply(try .init(file: config)) }
            try configuration.apply(.init(environment: ProcessInfo.processInfo.environment))
            var flags = CoordinatorConfiguration.Overrides()
            flags.stateDir = stateDir
            flags.databaseURL = databaseUrl
            flags.databaseBootTimeout = databaseBootTimeout
            flags.listen = listen
            flags.adminListen = adminListen
            flags.advertise = advertise
            flags.heartbeatInterval = heartbeatInterval
            flags.heartbeatGrace = heartbeatGrace
            flags.failoverGrace = failoverGrace
            flags.heartbeatBudget = heartbeatBudget
            flags.logLevel = logLevel
            try configuration.apply(flags)

            let level = configuration.logLevel
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            var logger = Logger(label: "muster")
            logger.logLevel = level
            try await CoordinatorServices.run(configuration: configuration, logger: logger)
        }
    }
}
