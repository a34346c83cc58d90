import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Shared

/// `muster-agent run [--state-dir DIR]`: the agent daemon.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run the agent: hold the session with the coordinator, heartbeat, renew.")

    @OptionGroup var common: CommonOptions

    @Option(name: .long, help: "The systemd manager that runs module units: system or user. Env: MUSTER_SYSTEMD.")
    var systemd: String = ProcessInfo.processInfo.environment["MUSTER_SYSTEMD"] ?? SystemdScope.system.rawValue

    @Option(name: .long, help: "Unit file directory (default: /etc/systemd/system, or the user unit directory).")
    var unitDir: String?

    @Option(name: .long, help: "Unit name prefix: <prefix>-<module>-<service>.service.")
    var unitPrefix: String = "muster"

    @Option(
        name: .long,
        help:
            "Ed25519 public key (PEM) trusted to sign modules; repeatable. Default: <state-dir>/pki/module-signing.pub."
    )
    var moduleKey: [String] = []

    func validate() throws {
        guard SystemdScope(rawValue: systemd) != nil else { throw ValidationError("--systemd must be system or user") }
        do {
            try UnitName.validateComponent(unitPrefix, field: "--unit-prefix")
        } catch let error as MusterError {
            throw ValidationError(error.message)
        }
    }

    func run() async throws {
        let logger = common.bootstrapLogging()
        var configuration = try common.configuration()
        configuration.modules = AgentConfiguration.Modules(
            systemd: SystemdScope(rawValue: systemd) ?? .system, unitDirectory: unitDir, unitPrefix: unitPrefix,
            trustedKeyFiles: moduleKey)
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
