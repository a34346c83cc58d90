import ArgumentParser
import Foundation
import Shared

/// The systemd manager the agent drives and how it names and trusts units: `muster-agent run`, `module …` and
/// `volume …` share these.
struct ModuleOptions: ParsableArguments {
    @Option(
        name: .long, help: "The systemd manager that runs module and volume units: system or user. Env: MUSTER_SYSTEMD."
    )
    var systemd: String = ProcessInfo.processInfo.environment["MUSTER_SYSTEMD"] ?? SystemdScope.system.rawValue

    @Option(
        name: [.customLong("unit-dir"), .customLong("unit-directory")],
        help: "Unit file directory (default: /etc/systemd/system, or the user unit directory).")
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
        if let unitDir, !unitDir.hasPrefix("/") { throw ValidationError("--unit-dir must be an absolute path") }
        do {
            try UnitName.validateComponent(unitPrefix, field: "--unit-prefix")
        } catch let error as MusterError {
            throw ValidationError(error.message)
        }
    }

    var modules: AgentConfiguration.Modules {
        AgentConfiguration.Modules(
            systemd: SystemdScope(rawValue: systemd) ?? .system, unitDirectory: unitDir, unitPrefix: unitPrefix,
            trustedKeyFiles: moduleKey)
    }
}
