import Foundation
import Logging
import Shared
import Synchronization

/// `migrateSQLite`: the engine of `muster-agent migrate-sqlite` as a task (DESIGN §7), run on the node that holds
/// the SQLite files.
///
/// Spec: `{"databases": ["/srv/app/data/app.db"], "target": "postgres://…", "schema": "app", "tables": [...],
/// "casts": ["t.col:type[:using]"], "jobs": 2, "replace": false, "dryRun": false, "snapshot": false}` — the same
/// fields as the command's options; the coordinator fills `target` when the operator relies on its credentials.
/// Progress: one update per table about once a second (`{"table", "rowsDone", "rowsTotal", "bytes",
/// "rowsPerSecond"}`). Result: the migration report (`migrate-sqlite --json`). A run whose verification fails,
/// that has error rows or whose sources changed fails with `VERIFICATION_FAILED` and the report in the details.
/// Re-running is safe: verified tables are skipped, partial ones reloaded (docs/migrate-sqlite.md).
struct MigrateSQLiteTask: TaskHandler {
    struct Spec: Codable, Sendable, Equatable {
        var databases: [String]
        var target: String?
        var schema: String?
        var tables: [String]?
        var casts: [String]?
        var jobs: Int?
        var replace: Bool?
        var dryRun: Bool?
        var snapshot: Bool?
    }

    let logger: Logger

    func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let spec = try spec.decode(Spec.self)
        guard !spec.databases.isEmpty else {
            throw MusterError(.invalidInput, "databases: at least one SQLite file is needed")
        }
        guard let target = spec.target, !target.isEmpty else {
            throw MusterError(
                .invalidInput, "target: no PostgreSQL URL (the coordinator fills it when it provides credentials)")
        }
        var casts: [CastRule] = []
        for text in spec.casts ?? [] {
            do {
                casts.append(try CastRule(parsing: text))
            } catch {
                throw MusterError(.invalidInput, "casts: \(error.message)", hint: error.hint)
            }
        }
        let engine = MigrationEngine(
            spec: MigrationSpec(
                databases: spec.databases, target: target, schema: spec.schema ?? "public", tables: spec.tables,
                casts: casts, jobs: spec.jobs, replace: spec.replace ?? false, dryRun: spec.dryRun ?? false,
                snapshot: spec.snapshot ?? false),
            logger: logger)

        // The engine reports from its copy threads; forward at most one update per table per second, in order.
        let (updates, sink) = AsyncStream.makeStream(of: TableProgress.self, bufferingPolicy: .bufferingNewest(64))
        let forwarder = Task {
            var last: [String: ContinuousClock.Instant] = [:]
            for await update in updates {
                let now = ContinuousClock.now
                if update.rowsDone < update.rowsTotal, let previous = last[update.table],
                    now - previous < .seconds(1)
                {
                    continue
                }
                last[update.table] = now
                await progress(
                    .object([
                        "table": .string(update.table), "rowsDone": .number(Double(update.rowsDone)),
                        "rowsTotal": .number(Double(update.rowsTotal)), "bytes": .number(Double(update.bytes)),
                        "rowsPerSecond": .number(
                            update.seconds > 0 ? (Double(update.rowsDone) / update.seconds).rounded() : 0),
                    ]))
            }
        }
        let report: MigrationReport
        do {
            report = try await engine.run { sink.yield($0) }
        } catch {
            sink.finish()
            await forwarder.value
            throw error
        }
        sink.finish()
        await forwarder.value

        let json = try JSONDecoder().decode(JSONValue.self, from: Data(try report.renderJSON().utf8))
        guard report.exitCode == 0 else {
            var problems: [String] = []
            let unverified = report.tables.filter { $0.verified == false }.map(\.table)
            if !unverified.isEmpty { problems.append("verification failed for \(unverified.joined(separator: ", "))") }
            if report.totalErrorRows > 0 {
                // The first one in the message, so a workflow's failed step says which row and why (all in details).
                let first = report.errorRows.first.map { e in
                    ", first: \(e.table) [\(e.key)] \(e.column) = \(e.value.prefix(80)): \(e.reason)"
                }
                problems.append("\(report.totalErrorRows) error rows\(first ?? "")")
            }
            if !report.sourcesUnchanged { problems.append("a source changed during the migration") }
            throw TaskFailure(
                code: .verificationFailed,
                message: "SQLite migration: \(problems.isEmpty ? "not verified" : problems.joined(separator: "; "))",
                details: json)
        }
        return json
    }
}
