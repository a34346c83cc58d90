import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

extension Muster {
    /// `muster tasks ls [--node ID] [--state S]`.
    struct TasksList: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List tasks, newest first.", aliases: ["list"])

        @Option(help: "Only tasks of this node (id).")
        var node: String?

        @Option(help: "Only tasks in this state: pending, assigned, running, succeeded, failed, cancelled.")
        var state: String?

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            var query: [String] = []
            if let node {
                guard UUID(uuidString: node) != nil else {
                    throw MusterError(
                        .usage, "--node '\(node)' is not a node id (a UUID)", hint: "`muster nodes` lists them")
                }
                query.append("node=\(node)")
            }
            if let state {
                guard TaskState(rawValue: state) != nil else {
                    throw MusterError(
                        .usage, "--state '\(state)' is not a task state",
                        hint: "use one of \(TaskState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                query.append("state=\(state)")
            }
            let path = query.isEmpty ? "/v1/tasks" : "/v1/tasks?" + query.joined(separator: "&")
            let tasks = try await client.client().send(.GET, path, as: [TaskRecord].self)
            print(try Output.render(.tasks(tasks), options: output))
        }
    }
}
