import Logging
import ServiceLifecycle
import UnixSignals

/// Builds the agent daemon: the services of `muster-agent run` in one `ServiceGroup` that shuts down
/// gracefully on SIGTERM/SIGINT. Tests call ``make(configuration:logger:)`` with a temp state dir.
public enum AgentServices {
    public struct Assembly: Sendable {
        public var group: ServiceGroup
        public var session: CoordinatorSession
    }

    public static func make(configuration: AgentConfiguration, logger: Logger) -> Assembly {
        let session = CoordinatorSession(
            configuration: CoordinatorSession.Configuration(
                stateDirectory: configuration.stateDirectory, backoff: configuration.backoff,
                minimumHeartbeatInterval: configuration.minimumHeartbeatInterval,
                maxFrameBytes: configuration.maxFrameBytes),
            logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: session)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        return Assembly(group: group, session: session)
    }
}
