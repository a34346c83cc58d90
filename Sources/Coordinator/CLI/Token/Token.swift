import ArgumentParser

extension Muster {
    /// `muster token create|ls|revoke`.
    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "token", abstract: "Create, list and revoke join tokens.",
            subcommands: [TokenCreate.self, TokenList.self, TokenRevoke.self])
    }
}
