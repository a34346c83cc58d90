import ArgumentParser
import Logging
import ServiceLifecycle
import Shared

/// `muster-agent run [--state-dir DIR]`: the agent daemon.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run the agent: hold the session with the coordinator, heartbeat, renew.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let logger = common.bootstrapLogging()
        let configuration = try common.configuration()
        _ = try NodeIdentity.load(stateDirectory: configuration.stateDirectory)
        try await AgentServices.make(configuration: configuration, logger: logger).group.run()
    }
}
