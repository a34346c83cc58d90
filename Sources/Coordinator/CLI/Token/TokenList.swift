import ArgumentParser
import NIOHTTP1

extension Muster {
    /// `muster token ls`.
    struct TokenList: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List join tokens (never their secrets).", aliases: ["list"])

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let tokens = try await client.client().send(.GET, "/v1/tokens", as: [TokenView].self)
            print(try Output.render(.tokens(tokens), options: output))
        }
    }
}
