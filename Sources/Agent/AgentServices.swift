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
        let runner = try makeTaskRunner(configuration: configuration, logger: logger)
        let volumes = volumeManager(configuration: configuration, logger: logger)
        let session = CoordinatorSession(
            configuration: CoordinatorSession.Configuration(
                stateDirectory: configuration.stateDirectory, backoff: configuration.backoff,
                minimumHeartbeatInterval: configuration.minimumHeartbeatInterval,
                maxFrameBytes: configuration.maxFrameBytes),
            tasks: runner, volumes: { await volumes.statuses() }, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: runner), .init(service: session)],
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
                .mountVolume: MountVolume(volumes: volumes),
                .unmountVolume: UnmountVolume(volumes: volumes),
                .syncTree: SyncTree(
                    engine: SyncEngine(logger: taskLogger), stateDirectory: configuration.stateDirectory),
            ],
            logger: taskLogger)
    }

    static func volumeManager(configuration: AgentConfiguration, logger: Logger) -> VolumeManager {
        let scope: SystemdManager.Scope = configuration.userManager ? .user : .system
        return VolumeManager(
            configuration: .init(
                unitDirectory: configuration.unitDirectory, connect: { try await SystemdManager.connect(scope) }),
            logger: logger)
    }
}
