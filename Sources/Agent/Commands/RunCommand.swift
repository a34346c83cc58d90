import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Shared

/// `muster-agent run [--state-dir DIR] [--systemd system|user] [--unit-dir D] [--unit-prefix P] [--module-key K]…`:
/// the agent daemon.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run the agent: hold the session with the coordinator, heartbeat, renew.")

    @OptionGroup var common: CommonOptions

    @OptionGroup var moduleOptions: ModuleOptions

    func run() async throws {
        let logger = common.bootstrapLogging()
        var configuration = try common.configuration()
        configuration.modules = moduleOptions.modules
        _ = try NodeIdentity.load(stateDirectory: configuration.stateDirectory)
        let attacher = try await AgentServices.makeModuleAttacher(configuration: configuration, logger: logger)
        if let attacher {
            // Modules attached before a restart or reboot come back (their units are not enabled).
            _ = await attacher.restoreAttached()
        } else {
            logger.notice("no module signing key configured: this node attaches no modules")
        }
        try await AgentServices.make(configuration: configuration, attacher: attacher, logger: logger).group.run()
    }
}
