import ArgumentParser
import NIOHTTP1

extension Muster {
    /// `muster token revoke ID`.
    struct TokenRevoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke", abstract: "Revoke a join token so no further node can join with it.")

        @Argument(help: "The token id (as `muster token ls` shows it).")
        var id: String

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let token = try await client.client().send(.DELETE, "/v1/tokens/\(id)", as: TokenView.self)
            print(try Output.render(.token(token), options: output))
        }
    }
}
