import Crypto
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

    /// The daemon; with an `attacher`, heartbeats list the attached modules' units and `attachModule` /
    /// `detachModule` tasks run.
    static func make(configuration: AgentConfiguration, attacher: ModuleAttacher?, logger: Logger) throws -> Assembly {
        let objects = ObjectTransport()
        let runner = try makeTaskRunner(
            configuration: configuration, objects: objects, attacher: attacher, logger: logger)
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
            tasks: runner, objects: objects, health: health, logger: logger)
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
    /// - Parameters:
    ///   - objects: The session's module transfer, used by `attachModule`.
    ///   - attacher: Attaches and detaches modules; without one, module tasks fetch and then fail saying why.
    static func makeTaskRunner(
        configuration: AgentConfiguration, objects: ObjectTransport = ObjectTransport(),
        attacher: ModuleAttacher? = nil, logger: Logger
    ) throws -> TaskRunner {
        let step: AttachModuleHandler.AttachStep =
            attacher.map { .attacher($0) }
            ?? .unavailable(reason: "the agent runs without a module attacher (no systemd manager or no module key)")
        return try makeTaskRunner(configuration: configuration, objects: objects, moduleStep: step, logger: logger)
    }

    /// The task runner with an explicit module step (tests pass ``AttachModuleHandler/AttachStep/fetchOnly``).
    static func makeTaskRunner(
        configuration: AgentConfiguration, objects: ObjectTransport, moduleStep: AttachModuleHandler.AttachStep,
        logger: Logger
    ) throws -> TaskRunner {
        var taskLogger = logger
        taskLogger[metadataKey: "component"] = "tasks"
        let volumes = volumeManager(configuration: configuration, logger: taskLogger)
        let stateDirectory = configuration.stateDirectory
        let fetcher = ModuleFetcher(
            stateDirectory: stateDirectory, transport: objects,
            configuration: .fitting(maxFrameBytes: configuration.maxFrameBytes),
            trustedKeys: { [try ModuleKeyFile.load(stateDirectory: stateDirectory)] }, logger: taskLogger)
        let gate = ModuleTaskGate()
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
                .precheck: Precheck(
                    connect: { try await SystemdManager.connect(configuration.modules.systemd) }, logger: taskLogger),
                .backup: Backup(stateDirectory: configuration.stateDirectory),
                .mountVolume: MountVolume(volumes: volumes),
                .unmountVolume: UnmountVolume(volumes: volumes),
                .syncTree: SyncTree(
                    engine: SyncEngine(
                        journalDirectory: SyncEngine.journalDirectory(stateDirectory: configuration.stateDirectory),
                        logger: taskLogger),
                    stateDirectory: configuration.stateDirectory),
                .attachModule: AttachModuleHandler(fetcher: fetcher, step: moduleStep, gate: gate),
                .detachModule: DetachModuleHandler(step: moduleStep, gate: gate),
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
        let keys: [Curve25519.Signing.PublicKey]
        // The key the coordinator sent (join response, welcome) when none is configured explicitly.
        let distributed = ModuleKeyFile.path(stateDirectory: configuration.stateDirectory)
        let onlyDistributed = keyFiles.isEmpty && FileManager.default.fileExists(atPath: distributed)
        if onlyDistributed {
            keys = [try ModuleKeyFile.load(stateDirectory: configuration.stateDirectory)]
        } else {
            if keyFiles.isEmpty {
                let fallback = TrustedModuleKeys.defaultPath(stateDirectory: configuration.stateDirectory)
                guard FileManager.default.fileExists(atPath: fallback) else { return nil }
                keyFiles = [fallback]
            }
            keys = try TrustedModuleKeys.load(keyFiles)
        }
        let manager: SystemdManager
        do {
            manager = try await SystemdManager.connect(modules.systemd)
        } catch where onlyDistributed {
            // Only the distributed key, no manager to talk to (e.g. a host without systemd): run without modules
            // rather than not at all; module tasks then fail saying so.
            logger.notice(
                "no systemd manager reachable: this node attaches no modules", metadata: ["error": "\(error)"])
            return nil
        }
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
