import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Shared

/// When a node without heartbeats counts as unreachable.
///
/// A node is unreachable when its last heartbeat is older than ``heartbeatTTL`` + ``grace``. Right after the
/// coordinator starts, agents still have to notice and reconnect, so nobody is marked before ``failoverGrace``
/// has passed since ``startedAt`` (Nomad's failover heartbeat TTL).
public struct SweepPolicy: Sendable, Equatable {
    public var heartbeatTTL: Duration
    public var grace: Duration
    public var failoverGrace: Duration
    public var startedAt: Date

    public init(heartbeatTTL: Duration, grace: Duration, failoverGrace: Duration, startedAt: Date) {
        self.heartbeatTTL = heartbeatTTL
        self.grace = grace
        self.failoverGrace = failoverGrace
        self.startedAt = startedAt
    }

    /// What a sweep at `now` does.
    public enum Action: Sendable, Equatable {
        /// Still inside the failover grace: mark nobody.
        case wait(until: Date)
        /// Mark ready or joining nodes whose last heartbeat (or join) is older than the cutoff.
        case markUnreachable(seenBefore: Date)
    }

    public func action(at now: Date) -> Action {
        let failoverEnd = startedAt.addingTimeInterval(failoverGrace.timeInterval)
        if now < failoverEnd { return .wait(until: failoverEnd) }
        return .markUnreachable(seenBefore: now.addingTimeInterval(-(heartbeatTTL + grace).timeInterval))
    }
}

extension Duration {
    /// Seconds as `TimeInterval`.
    var timeInterval: TimeInterval {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// The `Service` that periodically marks silent nodes unreachable (``SweepPolicy``).
///
/// Each sweep first flushes queued heartbeats (so a node is never judged on a heartbeat still in memory) and
/// runs under a transaction-level leader advisory lock, so with several coordinators only one sweeps at a time.
public struct NodeSweeper: Service {
    /// `pg_try_advisory_xact_lock` key of the sweep leader.
    public static let leaderLockKey: Int64 = 0x6D75_7374_6572_0002

    let database: Database
    let batcher: HeartbeatBatcher
    let policy: SweepPolicy
    let interval: Duration
    let now: @Sendable () -> Date
    /// The heartbeat interval currently assigned to agents (it grows with the number of sessions); `nil` keeps
    /// ``SweepPolicy/heartbeatTTL`` as given.
    let currentTTL: (@Sendable () async -> Duration)?
    let logger: Logger

    public init(
        database: Database, batcher: HeartbeatBatcher, policy: SweepPolicy, interval: Duration,
        now: @escaping @Sendable () -> Date = { Date() }, currentTTL: (@Sendable () async -> Duration)? = nil,
        logger: Logger
    ) {
        self.database = database
        self.batcher = batcher
        self.policy = policy
        self.interval = interval
        self.now = now
        self.currentTTL = currentTTL
        self.logger = logger
    }

    public func run() async throws {
        for await _ in AsyncTimerSequence.repeating(every: interval).cancelOnGracefulShutdown() {
            do {
                try await sweep()
            } catch {
                logger.debug("sweep skipped", metadata: ["error": "\(error)"])
            }
        }
    }

    /// One sweep at the injected clock's time.
    /// - Returns: The nodes marked unreachable.
    @discardableResult
    public func sweep() async throws -> [UUID] {
        try await batcher.flush(to: database, logger: logger)
        let at = now()
        var policy = self.policy
        if let currentTTL { policy.heartbeatTTL = max(policy.heartbeatTTL, await currentTTL()) }
        guard case .markUnreachable(let cutoff) = policy.action(at: at) else { return [] }
        let logger = self.logger
        let marked = try await database.transaction("sweep unreachable nodes") { connection in
            let lock = try await connection.query(
                "SELECT pg_try_advisory_xact_lock(\(Self.leaderLockKey))", logger: logger)
            var leader = false
            for try await got in lock.decode(Bool.self) { leader = got }
            guard leader else { return [UUID]() }
            let rows = try await connection.query(
                """
                UPDATE nodes SET state = 'unreachable'
                WHERE state IN ('ready', 'joining') AND COALESCE(last_seen, joined_at) < \(cutoff)
                RETURNING id
                """, logger: logger)
            var ids: [UUID] = []
            for try await id in rows.decode(UUID.self) { ids.append(id) }
            return ids
        }
        for id in marked {
            logger.notice("node unreachable: no heartbeat within TTL + grace", metadata: ["node": "\(id)"])
        }
        return marked
    }
}
