/// Facts an agent reports about its host when it joins.
public struct HostFacts: Codable, Sendable, Equatable {
    public var hostname: String
    public var machineID: String
    public var os: String
    public var kernel: String
    public var cpuCount: Int
    public var memoryBytes: UInt64
    public var agentVersion: String

    public init(
        hostname: String, machineID: String, os: String, kernel: String, cpuCount: Int, memoryBytes: UInt64,
        agentVersion: String
    ) {
        self.hostname = hostname
        self.machineID = machineID
        self.os = os
        self.kernel = kernel
        self.cpuCount = cpuCount
        self.memoryBytes = memoryBytes
        self.agentVersion = agentVersion
    }
}
