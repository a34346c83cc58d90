import ArgumentParser
import Foundation
import Shared

/// How the agent attaches modules: `muster-agent run` and `muster-agent module …` share these.
struct ModuleOptions: ParsableArguments {
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

    var modules: AgentConfiguration.Modules {
        AgentConfiguration.Modules(
            systemd: SystemdScope(rawValue: systemd) ?? .system, unitDirectory: unitDir, unitPrefix: unitPrefix,
            trustedKeyFiles: moduleKey)
    }
}
