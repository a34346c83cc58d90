import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

extension Muster {
    /// `muster tasks cancel ID`.
    struct TasksCancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cancel", abstract: "Cancel a task that has not finished (a running one is told to stop).")

        @Argument(help: "The task id.")
        var id: String

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            guard UUID(uuidString: id) != nil else {
                throw MusterError(.usage, "'\(id)' is not a task id (a UUID)", hint: "`muster tasks` lists them")
            }
            let task = try await client.client().send(.POST, "/v1/tasks/\(id)/cancel", as: TaskRecord.self)
            print(try Output.render(.task(task), options: output))
        }
    }
}
