import Foundation
import Logging
import ServiceLifecycle
import Shared
import UnixSignals

/// Builds the agent daemon: the services of `muster-agent run` in one `ServiceGroup` that shuts down
/// gracefully on SIGTERM/SIGINT. Tests call ``make(configuration:logger:)`` with a temp state dir.
public enum AgentServices {
    public struct Assembly: Sendable {
        public var group: ServiceGroup
        public var session: CoordinatorSession
    }

    /// - Throws: ``MusterError`` `.io` when the task journal cannot be opened.
    public static func make(configuration: AgentConfiguration, logger: Logger) throws -> Assembly {
        try make(configuration: configuration, attacher: nil, logger: logger)
    }

    /// The daemon; with an `attacher`, heartbeats list the attached modules' units.
    static func make(configuration: AgentConfiguration, attacher: ModuleAttacher?, logger: Logger) throws -> Assembly {
        let runner = try makeTaskRunner(configuration: configuration, logger: logger)
        let volumes = volumeManager(configuration: configuration, logger: logger)
        var units: (@Sendable () async -> [UnitStatus])?
        if let attacher { units = { await attacher.attachedUnits() } }
        let health = HealthCollector(
            stateDirectory: configuration.stateDirectory, units: units, volumes: { await volumes.statuses() })
        let session = CoordinatorSession(
            configuration: CoordinatorSession.Configuration(
                stateDirectory: configuration.stateDirectory, backoff: configuration.backoff,
                minimumHeartbeatInterval: configuration.minimumHeartbeatInterval,
                maxFrameBytes: configuration.maxFrameBytes),
            tasks: runner, health: health, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: runner), .init(service: session),
                    .init(
                        service: SystemdNotifier(
                            logger: logger,
                            status: "agent for \(configuration.stateDirectory), version \(MusterVersion.current)")),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        return Assembly(group: group, session: session)
    }

    /// The task runner with every task kind this agent implements, journaling under the state directory.
    public static func makeTaskRunner(configuration: AgentConfiguration, logger: Logger) throws -> TaskRunner {
        var taskLogger = logger
        taskLogger[metadataKey: "component"] = "tasks"
        let volumes = volumeManager(configuration: configuration, logger: taskLogger)
        return TaskRunner(
            configuration: .init(concurrency: configuration.taskConcurrency),
            journal: try TaskJournal(stateDirectory: configuration.stateDirectory),
            handlers: [
                .checkHealth: CheckHealth(collector: HealthCollector(stateDirectory: configuration.stateDirectory)),
                .rewriteJSONPaths: RewriteJSONPaths(),
                .editConfig: EditConfig(),
                .migrateSQLite: MigrateSQLiteTask(logger: taskLogger),
                .controlUnit: ControlUnit(
                    connect: { try await SystemdManager.connect(configuration.modules.systemd) },
                    log: .journal(directory: nil)),
                .mountVolume: MountVolume(volumes: volumes),
                .unmountVolume: UnmountVolume(volumes: volumes),
                .syncTree: SyncTree(
                    engine: SyncEngine(logger: taskLogger), stateDirectory: configuration.stateDirectory),
            ],
            logger: taskLogger)
    }

    /// The module attacher of `configuration.modules`: connects to the chosen systemd manager over D-Bus and trusts
    /// the configured module signing keys. `nil` when no key is configured and the default key file is absent
    /// (the node then attaches no modules).
    ///
    /// - Throws: `MusterError` `.connectionFailed` (no manager), `.notFound`/`.invalidInput` (a configured key).
    static func makeModuleAttacher(configuration: AgentConfiguration, logger: Logger) async throws -> ModuleAttacher? {
        let modules = configuration.modules
        var keyFiles = modules.trustedKeyFiles
        if keyFiles.isEmpty {
            let fallback = TrustedModuleKeys.defaultPath(stateDirectory: configuration.stateDirectory)
            guard FileManager.default.fileExists(atPath: fallback) else { return nil }
            keyFiles = [fallback]
        }
        let keys = try TrustedModuleKeys.load(keyFiles)
        let manager = try await SystemdManager.connect(modules.systemd)
        var attacherConfiguration = ModuleAttacher.Configuration()
        attacherConfiguration.scope = modules.systemd
        // A user manager cannot run .mount units: the agent mounts itself, in its own (the manager's) namespace.
        attacherConfiguration.mounts = modules.systemd == .system ? .units : .direct(namespacePID: nil)
        var moduleLogger = logger
        moduleLogger[metadataKey: "component"] = "modules"
        return ModuleAttacher(
            store: NodeModuleStore(stateDirectory: configuration.stateDirectory), manager: manager,
            unitDirectory: modules.effectiveUnitDirectory(environment: ProcessInfo.processInfo.environment),
            prefix: modules.unitPrefix, trustedKeys: keys, configuration: attacherConfiguration, logger: moduleLogger)
    }

    /// The volume manager: `.mount` units in the unit directory of the manager the agent drives (`--systemd`).
    static func volumeManager(configuration: AgentConfiguration, logger: Logger) -> VolumeManager {
        let modules = configuration.modules
        return VolumeManager(
            configuration: .init(
                unitDirectory: modules.effectiveUnitDirectory(environment: ProcessInfo.processInfo.environment),
                connect: { try await SystemdManager.connect(modules.systemd) }),
            logger: logger)
    }
}
