import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Shared
import UnixSignals

/// `muster-agent bench-sessions`: many simulated agents in one process, for `scripts/bench-join` (hidden).
///
/// Joins `--count` identities with the real ``JoinClient`` (one token use each, into `<state-dir>/<i>`; identities
/// already there are reused), then runs one real ``CoordinatorSession`` per identity — mutual TLS, `hello`,
/// heartbeats with a health report at the interval the coordinator assigns (never faster than `--heartbeat-min`).
/// Prints a status line every `--report-every` on stdout: `sessions connected=C heartbeats=H`.
struct BenchSessionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-sessions", abstract: "Load generator: many agent sessions from one process.",
        shouldDisplay: false)

    @Option(name: .long, help: "The coordinator's agent address, HOST[:PORT].")
    var coordinator: String

    @Option(name: .long, help: "A join token with at least --count uses (not needed when all identities exist).")
    var token: String?

    @Option(name: .long, help: "Number of simulated agents.")
    var count: Int = 2000

    @Option(name: .long, help: "Joins in flight at once.")
    var joinConcurrency: Int = 8

    @Option(name: .long, help: "Seconds between status lines.")
    var reportEvery: Int = 5

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard joinConcurrency >= 1 else { throw ValidationError("--join-concurrency must be at least 1") }
        guard reportEvery >= 1 else { throw ValidationError("--report-every must be at least 1") }
    }

    func run() async throws {
        let logger = common.bootstrapLogging()
        let address = try CoordinatorAddress(parsing: coordinator)
        let base = common.stateDir
        let count = self.count
        func directory(_ i: Int) -> String { "\(base)/\(i)" }

        // Join phase: the real join, a few at a time.
        let missing = (0..<count).filter { !NodeIdentity.exists(stateDirectory: directory($0)) }
        if !missing.isEmpty {
            guard let tokenText = token else {
                throw MusterError(.usage, "\(missing.count) identities are missing and no --token was given")
            }
            let parsed = try JoinToken(parsing: tokenText)
            let facts = HostFactsCollector.collect()
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                var pending = missing[...]
                func addNext() {
                    guard let i = pending.popFirst() else { return }
                    group.addTask {
                        try await JoinClient(
                            coordinator: address, token: parsed, stateDirectory: directory(i), facts: facts,
                            logger: logger
                        ).join()
                    }
                }
                for _ in 0..<joinConcurrency { addNext() }
                while try await group.next() != nil { addNext() }
            }
            say("joined \(missing.count) identities in \(ContinuousClock.now - started)")
        }

        // Session phase: one CoordinatorSession per identity, all in one ServiceGroup.
        let minimumInterval = try common.configuration().minimumHeartbeatInterval
        var sessionLogger = logger
        sessionLogger.logLevel = max(logger.logLevel, .warning)
        let sessions = (0..<count).map { i in
            CoordinatorSession(
                configuration: CoordinatorSession.Configuration(
                    stateDirectory: directory(i),
                    minimumHeartbeatInterval: minimumInterval),
                logger: sessionLogger)
        }
        let reporter = StatusReporter(sessions: sessions, every: .seconds(reportEvery))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: sessions.map { .init(service: $0) } + [.init(service: reporter)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        say("running \(count) sessions against \(address)")
        try await group.run()
    }
}

/// Prints how many sessions are connected and how many heartbeats they sent, every `every`.
private struct StatusReporter: Service {
    let sessions: [CoordinatorSession]
    let every: Duration

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let statuses = sessions.map(\.status)
            let connected = statuses.filter(\.connected).count
            let heartbeats = statuses.reduce(0) { $0 + $1.heartbeatsSent }
            say("sessions connected=\(connected) heartbeats=\(heartbeats)")
            try? await Task.sleep(for: every)
        }
    }
}

/// A line on stdout, unbuffered (the benchmark script reads it from a file while we run).
private func say(_ line: String) {
    FileHandle.standardOutput.write(Data("\(line)\n".utf8))
}
