import ArgumentParser
import Foundation
import Logging
import Shared
import Synchronization

/// `muster-agent migrate-sqlite SOURCE.db... --target postgres://…`: copies SQLite databases into PostgreSQL and
/// verifies every table.
struct MigrateSQLiteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate-sqlite",
        abstract: "Copy SQLite databases into PostgreSQL and verify every table.",
        discussion: """
            Sources are opened read-only; their size and SHA-256 are checked before and after. Exit status: 0 all \
            tables verified, 1 verification failed or error rows, 2 usage or connection error.
            """)

    @Argument(help: "SQLite database files.")
    var sources: [String]

    @Option(help: "Target database URL: postgres://user[:password]@host[:port]/database")
    var target: String

    @Option(help: "Target schema (created if missing).")
    var schema: String = "public"

    @Option(help: "Only these tables (comma-separated).")
    var tables: String?

    @Option(name: .customLong("cast"), help: "Column type override: table.column:type[:using]. Repeatable.")
    var casts: [String] = []

    @Option(help: "Tables copied in parallel (default: number of cores).")
    var jobs: Int?

    @Flag(help: "Show the plan, write nothing.")
    var dryRun = false

    @Flag(help: "Drop and recreate target tables that already exist.")
    var replace = false

    @Flag(help: "Migrate from an online backup copy of each source (for a source still in use).")
    var snapshot = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() async throws {
        let code = await Self.execute(spec: try makeSpec(), json: json)
        if code != 0 { throw ExitCode(code) }
    }

    func makeSpec() throws -> MigrationSpec {
        MigrationSpec(
            databases: sources, target: target, schema: schema,
            tables: tables.map { $0.split(separator: ",").map { String($0).trimmingCharactersASCIIWhitespace() } },
            casts: try casts.map { try CastRule(parsing: $0) }, jobs: jobs, replace: replace, dryRun: dryRun,
            snapshot: snapshot)
    }

    /// Runs the migration, prints the report (progress on a TTY to stderr) and returns the exit status.
    static func execute(spec: MigrationSpec, json: Bool) async -> Int32 {
        var logger = Logger(label: "muster.migrate-sqlite")
        logger.logLevel = .warning
        // MUSTER_LOG_LEVEL=debug shows the run's phases with their times (on stderr).
        if let level = ProcessInfo.processInfo.environment["MUSTER_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) {
            logger = Logger(label: "muster.migrate-sqlite") { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            logger.logLevel = level
        }
        let tty = isatty(STDERR_FILENO) == 1
        let progress = ProgressPrinter(enabled: tty && !json)
        do {
            let report = try await MigrationEngine(spec: spec, logger: logger).run { progress.update($0) }
            progress.finish()
            if json {
                print(try report.renderJSON())
            } else {
                if spec.dryRun {
                    print("dry run: nothing written. DDL that would run:")
                    for d in report.ddl { print(d) }
                    print("")
                }
                print(report.renderTable())
            }
            return report.exitCode
        } catch let error as MusterError {
            progress.finish()
            if json {
                let obj: [String: String] = ["error": error.message, "code": error.code.wireName, "hint": error.hint ?? ""]
                if let data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted]) {
                    print(String(decoding: data, as: UTF8.self))
                }
            }
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            return error.code.exitCode
        } catch {
            progress.finish()
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            return 1
        }
    }
}

/// One `\r`-refreshed progress line on a terminal, listing every table in flight.
final class ProgressPrinter: Sendable {
    private struct State {
        var tables: [String: TableProgress] = [:]
        var lastDraw = ContinuousClock.now
    }

    private let enabled: Bool
    private let state = Mutex(State())

    init(enabled: Bool) { self.enabled = enabled }

    func update(_ p: TableProgress) {
        guard enabled else { return }
        let line: String? = state.withLock { s in
            s.tables[p.table] = p
            let now = ContinuousClock.now
            guard now - s.lastDraw > .milliseconds(200) || p.rowsDone >= p.rowsTotal else { return nil }
            s.lastDraw = now
            return s.tables.keys.sorted().compactMap { s.tables[$0] }.map { t in
                let rate = t.seconds > 0 ? Double(t.rowsDone) / t.seconds : 0
                return "\(t.table) \(t.rowsDone)/\(t.rowsTotal) \(Int(rate)) rows/s"
            }.joined(separator: " | ")
        }
        if let line { FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8)) }
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
