import ArgumentParser
import Foundation
import Shared

extension Muster {
    /// `muster workflow ls|show|resume|rollback`.
    struct Workflow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "workflow", abstract: "Show, resume or roll back workflows (seed-cluster).",
            subcommands: [List.self, Show.self, Resume.self, Rollback.self], defaultSubcommand: List.self)

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "ls", abstract: "List workflows, newest first.")

            @Option(help: "Only this node's.")
            var node: String?

            @OptionGroup var client: ClientOptions
            @OptionGroup var output: OutputOptions

            func run() async throws {
                let query = node.map { "?node=\($0)" } ?? ""
                let workflows = try await client.client().send(.GET, "/v1/workflows\(query)", as: [WorkflowRecord].self)
                if output.json {
                    print(String(decoding: try MusterJSON.encoder(pretty: true).encode(workflows), as: UTF8.self))
                } else if output.quiet {
                    print(workflows.map { $0.id.uuidString.lowercased() }.joined(separator: "\n"))
                } else {
                    var table = Table(["ID", "KIND", "NODE", "STATE", "STEP", "CREATED"])
                    for workflow in workflows {
                        let count = (workflow.state == .rollingBack ? workflow.rollback?.count : nil) ?? workflow.steps.count
                        table.append([
                            workflow.id.uuidString.lowercased(), workflow.kind,
                            String(workflow.nodeID.uuidString.lowercased().prefix(8)), workflow.state.rawValue,
                            "\(min(workflow.currentStep + 1, count))/\(count)", Output.iso(workflow.createdAt),
                        ])
                    }
                    print(table.rendered)
                }
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "show", abstract: "Show a workflow's steps, times and, after a failure, the rollback.")

            @Argument(help: "The workflow id.")
            var id: String

            @Flag(help: "Follow it until it stops, showing progress.")
            var follow = false

            @OptionGroup var client: ClientOptions
            @Flag(help: "JSON instead of text.")
            var json = false

            func run() async throws {
                let uuid = try Workflow.parse(id)
                let admin = try client.client()
                let workflow =
                    follow
                    ? try await WorkflowFollower(admin: admin, json: json).follow(uuid, timeout: .seconds(86400))
                    : try await admin.send(.GET, "/v1/workflows/\(id.lowercased())", as: WorkflowRecord.self)
                if json {
                    print(String(decoding: try MusterJSON.encoder(pretty: true).encode(workflow), as: UTF8.self))
                } else {
                    print(WorkflowFollower.render(workflow))
                }
            }
        }

        struct Resume: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "resume", abstract: "Continue a failed workflow from its failed step, and follow it.")

            @Argument(help: "The workflow id.")
            var id: String

            @Flag(help: "NDJSON events instead of text.")
            var json = false

            @OptionGroup var client: ClientOptions

            func run() async throws {
                try await Workflow.act("resume", id: id, json: json, client: client)
            }
        }

        struct Rollback: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "rollback",
                abstract: "Undo a failed (or finished) workflow: restore the config and rewritten files from their "
                    + "backups and restart the standalone service.")

            @Argument(help: "The workflow id.")
            var id: String

            @Flag(help: "NDJSON events instead of text.")
            var json = false

            @OptionGroup var client: ClientOptions

            func run() async throws {
                try await Workflow.act("rollback", id: id, json: json, client: client)
            }
        }

        static func parse(_ id: String) throws -> UUID {
            guard let uuid = UUID(uuidString: id) else {
                throw MusterError(.usage, "'\(id)' is not a workflow id (a UUID)", hint: "`muster workflow ls` lists them")
            }
            return uuid
        }

        static func act(_ action: String, id: String, json: Bool, client: ClientOptions) async throws {
            let uuid = try parse(id)
            let admin = try client.client()
            _ = try await admin.send(.POST, "/v1/workflows/\(id.lowercased())/\(action)", as: WorkflowRecord.self)
            let final = try await WorkflowFollower(admin: admin, json: json).follow(uuid, timeout: .seconds(86400))
            try SeedCluster.finish(final, json: json)
        }
    }
}
