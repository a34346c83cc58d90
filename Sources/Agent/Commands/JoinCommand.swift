import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Shared

/// `muster-agent join --coordinator HOST:PORT --token T [--state-dir DIR] [--run]`
struct JoinCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join", abstract: "Join this host to a Muster cluster.",
        discussion: "Checks the coordinator against the token's CA pin before sending the token's secret.")

    @Option(name: .long, help: "The coordinator's agent address, HOST[:PORT] (port 7400 by default).")
    var coordinator: String

    @Option(name: .long, help: "The join token printed by `muster token create`.")
    var token: String

    @Flag(name: .long, help: "Run the agent right after joining.")
    var run = false

    @OptionGroup var common: CommonOptions

    /// For `--run`: the same systemd and module options as `muster-agent run`.
    @OptionGroup var moduleOptions: ModuleOptions

    func run() async throws {
        let logger = common.bootstrapLogging()
        let address = try CoordinatorAddress(parsing: coordinator)
        let parsed = try JoinToken(parsing: token)
        var configuration = try common.configuration()
        configuration.modules = moduleOptions.modules
        let identity = try await JoinClient(
            coordinator: address, token: parsed, stateDirectory: configuration.stateDirectory,
            facts: HostFactsCollector.collect(), logger: logger
        ).join()
        print(
            "joined the cluster as node \(identity.nodeID.uuidString.lowercased()) (identity in \(NodeIdentity.Paths(stateDirectory: configuration.stateDirectory).directory))"
        )
        guard run else { return }
        try await RunCommand.runDaemon(configuration: configuration, logger: logger)
    }
}
