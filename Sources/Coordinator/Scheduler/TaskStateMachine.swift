import Foundation
import Shared

/// How long a delivered task may go without its session before it is retried, and how retries back off.
public struct TaskRetryPolicy: Sendable, Equatable {
    /// Failures another attempt cannot change: the task fails at once instead of retrying after a backoff.
    public static let finalCodes: Set<String> = Set(
        ([.usage, .invalidInput, .notFound, .conflict, .forbidden, .verificationFailed, .unitNotFound, .unitFailed,
          .sourceCorrupt, .digestMismatch, .cancelled] as [MusterError.Code]).map(\.wireName))

    /// Whether a failure with this error code is worth another attempt.
    public static func isRetryable(_ failure: TaskFailure?) -> Bool {
        guard let failure else { return true }
        return !finalCodes.contains(failure.code)
    }

    /// How long an assignment holds without being renewed by the session that carries it.
    public var leaseDuration: Duration
    /// Delay before the second attempt; doubled for every further one.
    public var backoffBase: Duration
    /// Longest delay between attempts.
    public var backoffCap: Duration

    public init(
        leaseDuration: Duration = .seconds(30), backoffBase: Duration = .seconds(1), backoffCap: Duration = .seconds(60)
    ) {
        self.leaseDuration = leaseDuration
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
    }

    /// Delay after attempt number `attempt` (1-based) failed: base · 2^(attempt-1), at most the cap.
    public func backoff(afterAttempt attempt: Int) -> Duration {
        let exponent = max(0, min(attempt - 1, 30))
        let delay = backoffBase * (1 << exponent)
        return min(delay, backoffCap)
    }
}

/// The life cycle of one task as a value (STYLE §9): the store loads a row into it, feeds it one event with
/// the current time, writes the fields back and does what the returned action says.
///
/// `pending → assigned → running → succeeded | failed | cancelled`; a failed attempt or an expired lease goes
/// back to `pending` with an exponential backoff (``notBefore``) until ``maxAttempts`` are used, then `failed`.
/// A result for a task that already finished is acknowledged and ignored (delivery is at least once).
public struct TaskStateMachine: Sendable, Equatable {
    public private(set) var state: TaskState
    public private(set) var attempts: Int
    public let maxAttempts: Int
    public private(set) var leaseOwner: String?
    public private(set) var leaseExpiresAt: Date?
    /// A pending task is not assigned before this time (retry backoff).
    public private(set) var notBefore: Date?
    public let policy: TaskRetryPolicy

    public enum Action: Sendable, Equatable {
        /// Nothing changed.
        case none
        /// Store the new fields; nothing to tell anyone.
        case update
        /// Store, then send `assignTask` with this attempt number.
        case deliver(attempt: Int)
        /// Store the final state (with the result or error).
        case finish(TaskState)
        /// Store; the task waits in `pending` until the given time.
        case retry(notBefore: Date)
        /// Store `failed` with this error (no attempts left).
        case giveUp(TaskFailure)
        /// A result for a task that is already finished: acknowledge it, change nothing.
        case duplicateResult
        /// A message about an attempt that is no longer current: ignore it.
        case stale
        /// Store `cancelled`; tell the agent to stop when it had the task.
        case cancelled(notifyAgent: Bool)
        /// The request does not fit the task's state.
        case refuse(String)
    }

    public init(
        state: TaskState = .pending, attempts: Int = 0, maxAttempts: Int, leaseOwner: String? = nil,
        leaseExpiresAt: Date? = nil, notBefore: Date? = nil, policy: TaskRetryPolicy = TaskRetryPolicy()
    ) {
        self.state = state
        self.attempts = attempts
        self.maxAttempts = max(1, maxAttempts)
        self.leaseOwner = leaseOwner
        self.leaseExpiresAt = leaseExpiresAt
        self.notBefore = notBefore
        self.policy = policy
    }

    /// A session of the task's node can take it: `pending` (and past its backoff) → `assigned`.
    public mutating func assign(owner: String, now: Date) -> Action {
        guard state == .pending else { return .none }
        if let notBefore, notBefore > now { return .none }
        state = .assigned
        attempts += 1
        leaseOwner = owner
        leaseExpiresAt = now.addingTimeInterval(policy.leaseDuration.seconds)
        notBefore = nil
        return .deliver(attempt: attempts)
    }

    /// The agent started the attempt.
    public mutating func accepted(attempt: Int, now: Date) -> Action {
        guard attempt == attempts else { return .stale }
        switch state {
        case .assigned, .running:
            state = .running
            leaseExpiresAt = now.addingTimeInterval(policy.leaseDuration.seconds)
            return .update
        case .pending, .succeeded, .failed, .cancelled:
            return .stale
        }
    }

    /// The agent reported progress (counts as a sign of life).
    public mutating func progress(now: Date) -> Action {
        switch state {
        case .assigned, .running:
            state = .running
            leaseExpiresAt = now.addingTimeInterval(policy.leaseDuration.seconds)
            return .update
        case .pending, .succeeded, .failed, .cancelled:
            return .stale
        }
    }

    /// The session that holds the task is still there: extend the lease.
    public mutating func renewLease(owner: String, now: Date) -> Action {
        guard state == .assigned || state == .running, leaseOwner == owner else { return .none }
        leaseExpiresAt = now.addingTimeInterval(policy.leaseDuration.seconds)
        return .update
    }

    /// The agent reported a result for `attempt`.
    ///
    /// Success from any attempt finishes the task (kinds are idempotent, the work is done). A failure of an
    /// earlier attempt than the current one is stale; a failure of the current one retries while attempts
    /// are left — unless the failure is one that another attempt cannot change (`retryable: false`: a bad spec, a
    /// failed verification or precheck, a unit that does not start), which fails the task at once.
    public mutating func result(_ outcome: TaskOutcome, attempt: Int, retryable: Bool = true, now: Date) -> Action {
        if state.isFinal { return .duplicateResult }
        switch outcome {
        case .succeeded:
            finish(.succeeded)
            return .finish(.succeeded)
        case .failed:
            guard attempt >= attempts else { return .stale }
            guard retryable else {
                finish(.failed)
                return .finish(.failed)
            }
            return retryOrFail(now: now, finalState: .failed)
        }
    }

    /// The lease of an assigned or running task ran out (its session is gone).
    public mutating func leaseExpired(now: Date) -> Action {
        guard state == .assigned || state == .running, let leaseExpiresAt, leaseExpiresAt <= now else {
            return .none
        }
        if attempts < maxAttempts { return retryOrFail(now: now, finalState: .failed) }
        finish(.failed)
        return .giveUp(
            TaskFailure(
                code: .timeout,
                message: "the node did not finish the task within its lease (attempt \(attempts) of \(maxAttempts))"))
    }

    /// An operator cancelled the task.
    public mutating func cancel() -> Action {
        if state.isFinal { return .refuse("the task is already \(state.rawValue)") }
        let hadAgent = state == .assigned || state == .running
        finish(.cancelled)
        return .cancelled(notifyAgent: hadAgent)
    }

    private mutating func retryOrFail(now: Date, finalState: TaskState) -> Action {
        guard attempts < maxAttempts else {
            finish(finalState)
            return .finish(finalState)
        }
        state = .pending
        leaseOwner = nil
        leaseExpiresAt = nil
        let at = now.addingTimeInterval(policy.backoff(afterAttempt: attempts).seconds)
        notBefore = at
        return .retry(notBefore: at)
    }

    private mutating func finish(_ final: TaskState) {
        state = final
        leaseOwner = nil
        leaseExpiresAt = nil
        notBefore = nil
    }
}

extension Duration {
    /// Seconds as `TimeInterval`.
    var seconds: TimeInterval {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
