import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

extension Muster {
    /// `muster tasks show ID`.
    struct TasksShow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show", abstract: "Show one task with its spec, progress, result or error.")

        @Argument(help: "The task id.")
        var id: String

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            guard UUID(uuidString: id) != nil else {
                throw MusterError(.usage, "'\(id)' is not a task id (a UUID)", hint: "`muster tasks` lists them")
            }
            let task = try await client.client().send(.GET, "/v1/tasks/\(id)", as: TaskRecord.self)
            print(try Output.render(.task(task), options: output))
        }
    }
}
