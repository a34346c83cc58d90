import ArgumentParser
import NIOHTTP1
import Foundation
import Shared

extension Muster {
    /// `muster nodes show ID`.
    struct NodesShow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show", abstract: "Show one node with its facts and last health report.")

        @Argument(help: "The node id.")
        var id: String

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            guard UUID(uuidString: id) != nil else {
                throw MusterError(.usage, "'\(id)' is not a node id (a UUID)", hint: "`muster nodes` lists them")
            }
            let node = try await client.client().send(.GET, "/v1/nodes/\(id)", as: NodeView.self)
            print(try Output.render(.node(node), options: output))
        }
    }
}
