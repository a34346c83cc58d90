/// One attached unit as a node's health report lists it, read over D-Bus from the node's service manager.
public struct UnitStatus: Codable, Sendable, Equatable {
    /// The unit name, e.g. `muster-shop-api.service`.
    public var name: String
    /// The module the unit belongs to.
    public var module: String
    /// `active`, `activating`, `failed`, `inactive`, … (`ActiveState`).
    public var activeState: String
    /// `running`, `auto-restart`, `dead`, … (`SubState`).
    public var subState: String
    /// How often systemd restarted the service since it was started (`NRestarts`).
    public var nRestarts: UInt32
    /// The main process, 0 when none (`MainPID`).
    public var mainPID: UInt32
    /// systemd's `Result` (`success`, `exit-code`, `watchdog`, …), when the manager reports one.
    public var result: String?

    public init(
        name: String, module: String, activeState: String, subState: String, nRestarts: UInt32, mainPID: UInt32,
        result: String?
    ) {
        self.name = name
        self.module = module
        self.activeState = activeState
        self.subState = subState
        self.nRestarts = nRestarts
        self.mainPID = mainPID
        self.result = result
    }
}
