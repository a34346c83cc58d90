import Foundation

/// Agent → coordinator, every heartbeat interval.
public struct Heartbeat: Codable, Sendable, Equatable {
    public var report: HealthReport

    public init(report: HealthReport) {
        self.report = report
    }
}

/// Coordinator → agent, answer to ``Heartbeat``: the interval to use from now on (it grows with the number of
/// sessions the coordinator holds).
public struct HeartbeatAck: Codable, Sendable, Equatable {
    public var heartbeatIntervalMilliseconds: Int

    public init(heartbeatInterval: Duration) {
        self.heartbeatIntervalMilliseconds = heartbeatInterval.wireMilliseconds
    }

    public var heartbeatInterval: Duration { .milliseconds(heartbeatIntervalMilliseconds) }
}
