import ArgumentParser
import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

extension Muster {
    /// `muster seed-cluster --node N --profile seed.yaml [--dry-run] [--yes] [--replace] [--json]`: makes a standalone
    /// server the first node of a cluster (DESIGN §8, docs/seed-cluster.md).
    struct SeedCluster: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "seed-cluster",
            abstract: "Turn a standalone server (a systemd service with SQLite and local data) into the first cluster node.",
            discussion: """
                Plans the steps from the profile (docs/seed-profile.md), then runs them as a workflow on the node: \
                prechecks, backups, stop, SQLite → PostgreSQL, rsync to the volume, path rewrites, config edit, \
                start, health, verification. Each step is checkpointed in the coordinator's database: a second run \
                after success does nothing, a run after a failure continues from the failed step, and \
                `muster workflow rollback ID` returns to the standalone service. Exit codes: 0 done (or already \
                done), 1 a step failed (the rollback is printed), 2 usage or an invalid profile, 3 the prechecks \
                refused (nothing was changed).
                """)

        @Option(help: "The standalone node's id.")
        var node: String

        @Option(help: "The seed profile (YAML).")
        var profile: String

        @Flag(help: "Print the plan and the rollback; change nothing.")
        var dryRun = false

        @Flag(name: .shortAndLong, help: "Do not ask for confirmation.")
        var yes = false

        @Flag(help: "Migrate into target tables that already hold rows (replacing them).")
        var replace = false

        @Option(help: "Give up waiting after this long (the workflow keeps running).")
        var timeout = "24h"

        @Flag(help: "NDJSON events on stdout (step, progress, summary) instead of text.")
        var json = false

        @OptionGroup var client: ClientOptions

        func run() async throws {
            let limit = try Self.checkArguments(node: node, timeout: timeout)
            let seedProfile: SeedProfile
            do {
                seedProfile = try SeedProfile.load(path: profile)
            } catch let error as MusterError {
                throw MusterError(.usage, error.message, hint: error.hint ?? "docs/seed-profile.md describes the fields")
            }
            let admin = try client.client()
            let request = SeedPlanner.Request(node: node, profile: seedProfile, replace: replace, dryRun: true)
            let plan = try await admin.send(
                .POST, "/v1/workflows/seed-cluster", body: request, as: SeedPlanner.Response.self)
            if dryRun {
                try Self.printPlan(plan, json: json)
                return
            }
            if !yes {
                guard isatty(STDIN_FILENO) == 1 else {
                    throw MusterError(
                        .usage, "seed-cluster stops the service and changes the node; confirm with --yes",
                        hint: "--dry-run shows the plan")
                }
                FileHandle.standardError.write(Data((Self.describe(plan) + "\n\nProceed? [y/N] ").utf8))
                let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
                guard answer == "y" || answer == "yes" else {
                    throw MusterError(.usage, "not confirmed; nothing was changed")
                }
            }
            var real = request
            real.dryRun = false
            let started = try await admin.send(
                .POST, "/v1/workflows/seed-cluster", body: real, as: SeedPlanner.Response.self)
            try await Self.follow(started, command: "seed-cluster", admin: admin, json: json, timeout: limit)
        }

        /// `--node` must be a UUID; returns `--timeout` as a duration.
        static func checkArguments(node: String, timeout: String) throws -> Duration {
            guard UUID(uuidString: node) != nil else {
                throw MusterError(.usage, "--node '\(node)' is not a node id (a UUID)", hint: "`muster nodes` lists them")
            }
            return try CoordinatorConfiguration.duration(timeout, key: "--timeout")
        }

        /// A dry run's answer: the plan and its rollback, as text or JSON.
        static func printPlan(_ plan: SeedPlanner.Response, json: Bool) throws {
            if json {
                print(String(decoding: try MusterJSON.encoder(pretty: true).encode(plan), as: UTF8.self))
            } else {
                print(describe(plan))
            }
        }

        /// Says what the coordinator did with the request, follows the workflow, prints the summary, exits.
        static func follow(
            _ started: SeedPlanner.Response, command: String, admin: AdminClient, json: Bool, timeout: Duration
        ) async throws {
            guard let workflow = started.workflow else {
                throw MusterError(.internal, "the coordinator answered without a workflow")
            }
            let id = workflow.id.uuidString.lowercased()
            if !json {
                let what =
                    switch started.outcome {
                    case "already-done": "already done by workflow \(id); nothing to do"
                    case "resumed": "resuming workflow \(id) from step \(workflow.currentStep + 1)"
                    default: "workflow \(id): \(workflow.steps.count) steps"
                    }
                FileHandle.standardError.write(Data("\(command): \(what)\n".utf8))
            }
            let final = try await WorkflowFollower(admin: admin, json: json).follow(workflow.id, timeout: timeout)
            try finish(final, json: json, outcome: started.outcome)
        }

        /// Prints the summary and exits with the workflow's code.
        static func finish(_ workflow: WorkflowRecord, json: Bool, outcome: String? = nil) throws {
            if json {
                var summary: [String: JSONValue] = [
                    "event": .string("summary"), "workflow": try JSONValue(encoding: workflow),
                    "rollbackPlan": try JSONValue(encoding: workflow.rollbackPlan),
                ]
                if let outcome { summary["outcome"] = .string(outcome) }
                if let window = workflow.maintenanceWindow {
                    let end = window.end ?? workflow.finishedAt ?? Date()
                    summary["maintenanceWindowSeconds"] = .number(end.timeIntervalSince(window.start))
                }
                print(JSONValue.object(summary).jsonText)
            } else {
                print(WorkflowFollower.render(workflow))
            }
            switch workflow.state {
            case .succeeded, .rolledBack:
                return
            case .failed where workflow.steps.first?.state == .failed && workflow.steps.first?.kind == TaskKind.precheck.rawValue:
                throw ExitCode(3)
            default:
                throw ExitCode(1)
            }
        }

        static func describe(_ plan: SeedPlanner.Response) -> String {
            var lines = ["Plan (\(plan.plan.count) steps, each one task on the node):"]
            for (index, step) in plan.plan.enumerated() {
                lines.append("  \(index + 1). \(step.name)\(step.window == .opens ? "   ← service down from here" : "")"
                    + (step.window == .closes ? "   ← until this is verified" : ""))
            }
            lines.append("If a step fails, `muster workflow rollback` runs (for the steps that started):")
            for (index, step) in plan.rollback.enumerated() { lines.append("  \(index + 1). \(step.name)") }
            lines.append("SQLite files and local directories are only read; migrated tables and copies are kept.")
            return lines.joined(separator: "\n")
        }
    }
}
