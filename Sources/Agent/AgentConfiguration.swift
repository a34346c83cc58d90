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

    /// Modules: which systemd manager runs their units, where unit files go, which keys sign modules.
    public var modules: Modules

    public static let defaultStateDirectory = "/var/lib/muster"

    /// How the agent attaches modules (issue 3, docs/modules.md "Attaching").
    public struct Modules: Sendable {
        /// `--systemd system|user`: the manager the agent drives over D-Bus.
        public var systemd: SystemdScope
        /// Where unit files are written; `nil`: `/etc/systemd/system` (system) or
        /// `$XDG_CONFIG_HOME/systemd/user` (user, default `~/.config/systemd/user`).
        public var unitDirectory: String?
        /// Unit names are `<prefix>-<module>-<service>.service`.
        public var unitPrefix: String
        /// PEM files with the Ed25519 public keys whose module signatures are trusted (SPKI,
        /// `openssl pkey -pubout`); empty: `<state-dir>/pki/module-signing.pub` if it exists.
        public var trustedKeyFiles: [String]

        public init(
            systemd: SystemdScope = .system, unitDirectory: String? = nil, unitPrefix: String = "muster",
            trustedKeyFiles: [String] = []
        ) {
            self.systemd = systemd
            self.unitDirectory = unitDirectory
            self.unitPrefix = unitPrefix
            self.trustedKeyFiles = trustedKeyFiles
        }

        /// The unit directory in effect for `systemd`.
        public func effectiveUnitDirectory(environment: [String: String]) -> String {
            if let unitDirectory { return unitDirectory }
            switch systemd {
            case .system: return "/etc/systemd/system"
            case .user:
                let config = environment["XDG_CONFIG_HOME"] ?? "\(environment["HOME"] ?? "/root")/.config"
                return "\(config)/systemd/user"
            }
        }
    }

    public init(
        stateDirectory: String = Self.defaultStateDirectory, logLevel: Logger.Level = .info,
        minimumHeartbeatInterval: Duration = .milliseconds(100), backoff: Backoff = Backoff(),
        maxFrameBytes: Int = FrameDecoder.defaultMaximumFrameBytes, taskConcurrency: Int = 4,
        modules: Modules = Modules()
    ) {
        self.modules = modules
        self.taskConcurrency = taskConcurrency
        self.stateDirectory = stateDirectory
        self.logLevel = logLevel
        self.minimumHeartbeatInterval = minimumHeartbeatInterval
        self.backoff = backoff
        self.maxFrameBytes = maxFrameBytes
    }
}

/// Which systemd manager the agent drives (`--systemd system|user`): the system manager (production: the agent is
/// a system service) or a user manager (the agent drives `systemd --user` over the user bus).
public enum SystemdScope: String, Sendable, CaseIterable {
    case system
    case user
}
