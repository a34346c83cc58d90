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
        let objects = ObjectTransport()
        let runner = try makeTaskRunner(configuration: configuration, objects: objects, logger: logger)
        let session = CoordinatorSession(
            configuration: CoordinatorSession.Configuration(
                stateDirectory: configuration.stateDirectory, backoff: configuration.backoff,
                minimumHeartbeatInterval: configuration.minimumHeartbeatInterval,
                maxFrameBytes: configuration.maxFrameBytes),
            tasks: runner, objects: objects, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: runner), .init(service: session)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        return Assembly(group: group, session: session)
    }

    /// The task runner with every task kind this agent implements, journaling under the state directory.
    /// - Parameter objects: The session's module transfer, used by `attachModule`.
    public static func makeTaskRunner(
        configuration: AgentConfiguration, objects: ObjectTransport = ObjectTransport(), logger: Logger
    ) throws -> TaskRunner {
        var taskLogger = logger
        taskLogger[metadataKey: "component"] = "tasks"
        let stateDirectory = configuration.stateDirectory
        let fetcher = ModuleFetcher(
            stateDirectory: stateDirectory, transport: objects,
            configuration: .fitting(maxFrameBytes: configuration.maxFrameBytes),
            trustedKeys: { [try ModuleKeyFile.load(stateDirectory: stateDirectory)] }, logger: taskLogger)
        return TaskRunner(
            configuration: .init(concurrency: configuration.taskConcurrency),
            journal: try TaskJournal(stateDirectory: configuration.stateDirectory),
            handlers: [
                .checkHealth: CheckHealth(collector: HealthCollector(stateDirectory: configuration.stateDirectory)),
                .attachModule: AttachModuleHandler(fetcher: fetcher),
            ],
            logger: taskLogger)
    }
}
