/// The heartbeat interval a coordinator assigns, Nomad style: spread the sessions it holds so that the
/// cluster-wide rate stays within a budget, but never beat faster than a minimum interval.
///
/// `interval = max(minimumInterval, sessions / budgetPerSecond)`.
public struct HeartbeatBudget: Sendable, Equatable {
    /// Heartbeats per second this coordinator is willing to absorb.
    public var budgetPerSecond: Double
    /// The shortest interval ever assigned (10 s in production; shorter in tests).
    public var minimumInterval: Duration

    public init(budgetPerSecond: Double = 50, minimumInterval: Duration = .seconds(10)) {
        self.budgetPerSecond = budgetPerSecond
        self.minimumInterval = minimumInterval
    }

    /// The interval for every node when the coordinator holds `sessions` sessions.
    public func interval(sessions: Int) -> Duration {
        guard budgetPerSecond > 0, sessions > 0 else { return minimumInterval }
        let spread = Duration.milliseconds(Int((Double(sessions) / budgetPerSecond * 1000).rounded(.up)))
        return max(minimumInterval, spread)
    }
}
