import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

extension Muster {
    /// `muster tasks run --node ID --kind KIND [--spec JSON] [--max-attempts N] [--wait]`.
    struct TasksRun: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Create a task on a node; with --wait, wait until it finished (exit 1 when it failed).")

        @Option(help: "The node id.")
        var node: String

        @Option(help: "The task kind, e.g. checkHealth.")
        var kind: String

        @Option(help: #"The task's spec as a JSON object, e.g. '{"tcp": ["127.0.0.1:5432"]}'."#)
        var spec: String?

        @Option(help: "Attempts before the task counts as failed (default 3).")
        var maxAttempts: Int?

        @Flag(help: "Wait until the task finished and print it.")
        var wait = false

        @Option(help: "With --wait: give up waiting after this long (e.g. 30s, 5m).")
        var timeout = "10m"

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            guard UUID(uuidString: node) != nil else {
                throw MusterError(
                    .usage, "--node '\(node)' is not a node id (a UUID)", hint: "`muster nodes` lists them")
            }
            let specValue: JSONValue?
            do {
                specValue = try spec.map { try JSONValue(parsing: $0) }
            } catch let error as MusterError {
                throw MusterError(.usage, "--spec is \(error.message)", hint: #"for example --spec '{"paths": ["/"]}'"#)
            }
            let limit = try CoordinatorConfiguration.duration(timeout, key: "--timeout")
            let admin = try client.client()
            var task = try await admin.send(
                .POST, "/v1/tasks",
                body: CreateTaskRequest(node: node, kind: kind, spec: specValue, maxAttempts: maxAttempts),
                as: TaskRecord.self)
            if wait {
                let clock = ContinuousClock()
                let deadline = clock.now + limit
                var lastState = task.state
                while !task.state.isFinal {
                    guard clock.now < deadline else {
                        throw MusterError(
                            .timeout,
                            "task \(task.id.uuidString.lowercased()) is still \(task.state.rawValue) after \(timeout)",
                            hint: "`muster tasks show \(task.id.uuidString.lowercased())` shows it later")
                    }
                    try await Task.sleep(for: .milliseconds(250))
                    task = try await admin.send(
                        .GET, "/v1/tasks/\(task.id.uuidString.lowercased())", as: TaskRecord.self)
                    if task.state != lastState, !output.json, !output.quiet {
                        FileHandle.standardError.write(
                            Data("task \(task.state.rawValue) (attempt \(task.attempts))\n".utf8))
                        lastState = task.state
                    }
                }
            }
            print(try Output.render(.task(task), options: output))
            if wait, task.state != .succeeded {
                throw MusterError(
                    .internal,
                    "task \(task.id.uuidString.lowercased()) \(task.state.rawValue): \(task.error?.message ?? "no error recorded")"
                )
            }
        }
    }
}
