/// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter"):
/// the n-th retry waits a uniformly random time in `[0, min(cap, base · 2ⁿ)]`.
///
/// Pure: the randomness comes in as a number in `[0, 1]`, so tests pin it.
public struct Backoff: Sendable, Equatable {
    public var base: Duration
    public var cap: Duration

    public init(base: Duration = .milliseconds(500), cap: Duration = .seconds(60)) {
        self.base = base
        self.cap = cap
    }

    /// The upper bound of the wait before retry number `attempt` (0-based).
    public func ceiling(attempt: Int) -> Duration {
        let exponent = min(max(attempt, 0), 40)
        let scaled = base * Double(UInt64(1) << UInt64(exponent))
        return min(cap, scaled)
    }

    /// The wait before retry number `attempt`, given `unitRandom` drawn uniformly from `[0, 1]`.
    public func delay(attempt: Int, unitRandom: Double) -> Duration {
        let fraction = min(max(unitRandom, 0), 1)
        return ceiling(attempt: attempt) * fraction
    }
}
