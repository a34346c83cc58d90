import ArgumentParser

extension Muster {
    /// `muster nodes [ls|show ID|forget ID]` (`ls` when no verb is given).
    struct Nodes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "nodes", abstract: "List, show and forget nodes.",
            subcommands: [NodesList.self, NodesShow.self, NodesForget.self], defaultSubcommand: NodesList.self)
    }
}
