/// Tells the service manager about the agent's state (`sd_notify(3)`): readiness, watchdog pings, status text.
///
/// States are formatted in Swift into one newline-separated string and sent with the non-variadic `sd_notify`
/// (through ``SDDaemon``). Outside systemd (`NOTIFY_SOCKET` unset) sending is a no-op returning `false`.
enum SDNotify {
    enum State: Sendable, Equatable {
        /// `READY=1`: start-up finished (for `Type=notify`).
        case ready
        /// `RELOADING=1`
        case reloading
        /// `STOPPING=1`
        case stopping
        /// `WATCHDOG=1`: keep-alive ping.
        case watchdog
        /// `STATUS=…`: one line of free text (line breaks become spaces).
        case status(String)
        /// `MAINPID=…`
        case mainPID(Int32)

        var assignment: String {
            switch self {
            case .ready: "READY=1"
            case .reloading: "RELOADING=1"
            case .stopping: "STOPPING=1"
            case .watchdog: "WATCHDOG=1"
            case .status(let text):
                "STATUS="
                    + String(text.map { $0.isNewline || $0 == "\0" ? " " : $0 })
            case .mainPID(let pid): "MAINPID=\(pid)"
            }
        }
    }

    /// The preformatted string handed to `sd_notify`.
    static func format(_ states: [State]) -> String {
        states.map(\.assignment).joined(separator: "\n")
    }

    /// Sends `states` in one datagram.
    /// - Returns: `false` when not running under systemd (no `NOTIFY_SOCKET`).
    /// - Throws: ``SDBusError`` when the datagram could not be sent.
    @discardableResult
    static func send(_ states: State...) throws -> Bool {
        try SDDaemon.notify(format(states))
    }

    /// The watchdog interval (`WATCHDOG_USEC` for this process), or `nil` when no watchdog is configured.
    static func watchdogInterval() throws -> Duration? {
        guard let usec = try SDDaemon.watchdogMicroseconds() else { return nil }
        return .microseconds(Int64(clamping: usec))
    }
}
