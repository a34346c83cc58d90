import Logging
import Shared

/// Everything `muster-agent run` needs, as a value (STYLE §6).
public struct AgentConfiguration: Sendable {
    /// Where the identity (and later modules and journals) live.
    public var stateDirectory: String
    public var logLevel: Logger.Level
    /// The agent never beats faster than this, whatever the coordinator assigns.
    public var minimumHeartbeatInterval: Duration
    /// Reconnect backoff (full jitter).
    public var backoff: Backoff
    public var maxFrameBytes: Int
    /// Tasks run at the same time; further deliveries wait.
    public var taskConcurrency: Int
    /// Where volume `.mount` units are written.
    public var unitDirectory: String = "/etc/systemd/system"
    /// Talk to the user manager (`--systemd user`) instead of the system manager.
    public var userManager: Bool = false

    public static let defaultStateDirectory = "/var/lib/muster"

    public init(
        stateDirectory: String = Self.defaultStateDirectory, logLevel: Logger.Level = .info,
        minimumHeartbeatInterval: Duration = .milliseconds(100), backoff: Backoff = Backoff(),
        maxFrameBytes: Int = FrameDecoder.defaultMaximumFrameBytes, taskConcurrency: Int = 4
    ) {
        self.taskConcurrency = taskConcurrency
        self.stateDirectory = stateDirectory
        self.logLevel = logLevel
        self.minimumHeartbeatInterval = minimumHeartbeatInterval
        self.backoff = backoff
        self.maxFrameBytes = maxFrameBytes
    }
}
