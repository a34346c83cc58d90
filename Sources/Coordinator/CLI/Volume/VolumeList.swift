import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

extension Muster {
    /// `muster volume ls`.
    struct VolumeList: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List volumes with their attachments and what each node last reported.")

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let volumes = try await client.client().send(.GET, "/v1/volumes", as: [VolumeView].self)
            print(try VolumeOutput.render(.volumes(volumes), options: output))
        }
    }
}
