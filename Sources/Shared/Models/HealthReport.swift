import struct Foundation.Date

/// The health report an agent sends with every heartbeat.
public struct HealthReport: Codable, Sendable, Equatable {
    /// 1, 5 and 15 minute load averages.
    public var load: [Double]
    public var memoryTotalBytes: UInt64
    public var memoryAvailableBytes: UInt64
    /// Disk of the agent's state directory.
    public var diskTotalBytes: UInt64
    public var diskFreeBytes: UInt64
    public var uptimeSeconds: Double
    public var agentVersion: String
    /// The agent's clock when it made the report.
    public var clock: Date
    /// Every unit of an attached module with its state, read over D-Bus; `nil` when the agent attaches no modules
    /// (and in reports from agents that predate it: the key is optional on the wire).
    public var units: [UnitStatus]?

    public init(
        load: [Double], memoryTotalBytes: UInt64, memoryAvailableBytes: UInt64, diskTotalBytes: UInt64,
        diskFreeBytes: UInt64, uptimeSeconds: Double, agentVersion: String, clock: Date, units: [UnitStatus]? = nil
    ) {
        self.units = units
        self.load = load
        self.memoryTotalBytes = memoryTotalBytes
        self.memoryAvailableBytes = memoryAvailableBytes
        self.diskTotalBytes = diskTotalBytes
        self.diskFreeBytes = diskFreeBytes
        self.uptimeSeconds = uptimeSeconds
        self.agentVersion = agentVersion
        self.clock = clock
    }
}
