import ArgumentParser
import NIOHTTP1

extension Muster {
    /// `muster nodes ls [--all]`.
    struct NodesList: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List nodes (with --json: facts and the last health report too).",
            aliases: ["list"])

        @Flag(help: "Include forgotten nodes.")
        var all = false

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let nodes = try await client.client().send(
                .GET, all ? "/v1/nodes?all=true" : "/v1/nodes", as: [NodeView].self)
            print(try Output.render(.nodes(nodes), options: output))
        }
    }
}
