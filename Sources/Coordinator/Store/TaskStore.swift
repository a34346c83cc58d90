import Foundation
import Logging
import PostgresNIO
import Shared

/// A task as stored and as the admin API and `muster tasks` show it.
public struct TaskRecord: Codable, Sendable, Equatable {
    public var id: UUID
    public var nodeID: UUID
    public var kind: String
    public var spec: JSONValue
    public var state: TaskState
    public var attempts: Int
    public var maxAttempts: Int
    public var leaseOwner: String?
    public var leaseExpiresAt: Date?
    public var notBefore: Date?
    public var progress: JSONValue?
    public var result: JSONValue?
    public var error: TaskFailure?
    public var workflowID: UUID?
    public var stepIndex: Int?
    public var createdAt: Date
    public var updatedAt: Date
    public var finishedAt: Date?

    private enum CodingKeys: String, CodingKey {
        case id, nodeID, kind, spec, state, attempts, maxAttempts, leaseOwner, leaseExpiresAt, notBefore, progress
        case result, error, workflowID, stepIndex, createdAt, updatedAt, finishedAt
    }

    /// Encodes ids in lower case, as `muster nodes` shows node ids.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id.uuidString.lowercased(), forKey: .id)
        try c.encode(nodeID.uuidString.lowercased(), forKey: .nodeID)
        try c.encode(kind, forKey: .kind)
        try c.encode(spec, forKey: .spec)
        try c.encode(state, forKey: .state)
        try c.encode(attempts, forKey: .attempts)
        try c.encode(maxAttempts, forKey: .maxAttempts)
        try c.encode(leaseOwner, forKey: .leaseOwner)
        try c.encode(leaseExpiresAt, forKey: .leaseExpiresAt)
        try c.encode(notBefore, forKey: .notBefore)
        try c.encode(progress, forKey: .progress)
        try c.encode(result, forKey: .result)
        try c.encode(error, forKey: .error)
        try c.encode(workflowID?.uuidString.lowercased(), forKey: .workflowID)
        try c.encode(stepIndex, forKey: .stepIndex)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encode(finishedAt, forKey: .finishedAt)
    }
}

/// Tasks in PostgreSQL (table `tasks`, DESIGN §4 and §10).
///
/// Every change of a task's state goes through ``TaskStateMachine``: the row is read `FOR UPDATE`, the machine
/// decides, its fields are written back in the same transaction. Claiming and the lease sweep read with
/// `FOR UPDATE SKIP LOCKED`, so several coordinators sharing the database never hand out one task twice.
public struct TaskStore: Sendable {
    let database: Database
    public let policy: TaskRetryPolicy
    let logger: Logger

    /// Attempts a task gets unless its creator says otherwise.
    public static let defaultMaxAttempts = 3

    public init(database: Database, policy: TaskRetryPolicy = TaskRetryPolicy(), logger: Logger) {
        self.database = database
        self.policy = policy
        self.logger = logger
    }

    // MARK: - Operator side

    /// Creates a `pending` task for a node and records `task.create` in the audit log.
    /// - Throws: ``MusterError`` `.notFound` for an unknown node, `.conflict` for a forgotten one,
    ///   `.invalidInput` for a bad attempt count.
    public func create(
        nodeID: UUID, kind: TaskKind, spec: JSONValue = .emptyObject, maxAttempts: Int = Self.defaultMaxAttempts,
        workflowID: UUID? = nil, stepIndex: Int? = nil, now: Date, actor: String
    ) async throws -> TaskRecord {
        guard (1...100).contains(maxAttempts) else {
            throw MusterError(.invalidInput, "maxAttempts must be between 1 and 100, not \(maxAttempts)")
        }
        let logger = self.logger
        return try await database.transaction("create a task") { connection in
            try await Self.insert(
                on: connection, id: UUID(), nodeID: nodeID, kind: kind, spec: spec, maxAttempts: maxAttempts,
                workflowID: workflowID, stepIndex: stepIndex, now: now, actor: actor, logger: logger)
        }
    }

    /// Inserts a `pending` task inside the caller's transaction (a workflow step creates its task in the same
    /// transaction that records the step, so a crash never leaves a step with two tasks or none recorded).
    static func insert(
        on connection: PostgresConnection, id: UUID, nodeID: UUID, kind: TaskKind, spec: JSONValue, maxAttempts: Int,
        workflowID: UUID?, stepIndex: Int?, now: Date, actor: String, logger: Logger
    ) async throws -> TaskRecord {
        let specText = spec.jsonText
        let nodes = try await connection.query(
            "SELECT state FROM nodes WHERE id = \(nodeID) FOR SHARE", logger: logger)
        var nodeState: String?
        for try await state in nodes.decode(String.self) { nodeState = state }
        guard let nodeState else {
            throw MusterError(
                .notFound, "there is no node with id \(nodeID)", hint: "`muster nodes` lists the nodes")
        }
        guard nodeState != NodeState.forgotten.rawValue else {
            throw MusterError(.conflict, "node \(nodeID) was forgotten; it takes no tasks")
        }
        try await connection.run(
            """
            INSERT INTO tasks (id, node_id, kind, spec, state, attempts, max_attempts, workflow_id, step_index,
                               created_at, updated_at)
            VALUES (\(id), \(nodeID), \(kind.rawValue), \(specText)::jsonb, 'pending', 0, \(maxAttempts),
                    \(workflowID), \(stepIndex), \(now), \(now))
            """, logger: logger)
        try await AuditLog.record(
            on: connection, actor: actor, action: "task.create", target: id.uuidString.lowercased(),
            details: ["node": nodeID.uuidString.lowercased(), "kind": kind.rawValue], logger: logger)
        return try await Self.load(id: id, nodeID: nil, lock: false, on: connection, logger: logger)
    }

    /// Tasks, newest first, optionally of one node and/or in one state.
    public func list(nodeID: UUID? = nil, state: TaskState? = nil, limit: Int = 500) async throws -> [TaskRecord] {
        let logger = self.logger
        let stateText = state?.rawValue
        return try await database.withConnection("list tasks") { connection in
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.columns) FROM tasks
                WHERE (\(nodeID)::uuid IS NULL OR node_id = \(nodeID)) AND (\(stateText)::text IS NULL OR state = \(stateText))
                ORDER BY created_at DESC, id LIMIT \(limit)
                """, logger: logger)
            var out: [TaskRecord] = []
            for try await row in rows.decode(Self.RowType.self) { out.append(try Self.record(from: row)) }
            return out
        }
    }

    /// One task.
    /// - Throws: ``MusterError`` `.notFound`.
    public func show(id: UUID) async throws -> TaskRecord {
        let logger = self.logger
        return try await database.withConnection("show a task") { connection in
            try await Self.load(id: id, nodeID: nil, lock: false, on: connection, logger: logger)
        }
    }

    /// Cancels a task that has not finished.
    /// - Returns: The task and whether its node must be told to stop it.
    /// - Throws: ``MusterError`` `.notFound`, `.conflict` when it already finished.
    public func cancel(id: UUID, now: Date, actor: String) async throws -> (task: TaskRecord, notifyAgent: Bool) {
        let logger = self.logger
        let policy = self.policy
        return try await database.transaction("cancel a task") { connection in
            let task = try await Self.load(id: id, nodeID: nil, lock: true, on: connection, logger: logger)
            var machine = Self.machine(task, policy: policy)
            let action = machine.cancel()
            guard case .cancelled(let notify) = action else {
                throw MusterError(.conflict, "cannot cancel task \(id): the task is already \(task.state.rawValue)")
            }
            try await Self.write(machine, id: id, now: now, on: connection, logger: logger)
            try await AuditLog.record(
                on: connection, actor: actor, action: "task.cancel", target: id.uuidString.lowercased(),
                details: [:], logger: logger)
            return (try await Self.load(id: id, nodeID: nil, lock: false, on: connection, logger: logger), notify)
        }
    }

    // MARK: - Dispatcher side

    /// Assigns up to `limit` pending tasks of a node whose backoff has passed to the session `owner`.
    ///
    /// Rows are locked with `FOR UPDATE SKIP LOCKED`: a concurrent claimer (another coordinator, another tick)
    /// skips them instead of waiting, and the state check in ``TaskStateMachine/assign(owner:now:)`` makes a
    /// task assigned once.
    /// - Returns: The assigned tasks, with their new attempt number.
    public func claim(nodeID: UUID, owner: String, limit: Int = 32, now: Date) async throws -> [TaskRecord] {
        let logger = self.logger
        let policy = self.policy
        return try await database.transaction("claim tasks") { connection in
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.columns) FROM tasks
                WHERE node_id = \(nodeID) AND state = 'pending' AND (not_before IS NULL OR not_before <= \(now))
                ORDER BY created_at, id LIMIT \(limit)
                FOR UPDATE SKIP LOCKED
                """, logger: logger)
            var candidates: [TaskRecord] = []
            for try await row in rows.decode(Self.RowType.self) { candidates.append(try Self.record(from: row)) }
            var claimed: [TaskRecord] = []
            for var task in candidates {
                var machine = Self.machine(task, policy: policy)
                guard case .deliver = machine.assign(owner: owner, now: now) else { continue }
                try await Self.write(machine, id: task.id, now: now, on: connection, logger: logger)
                Self.apply(machine, to: &task, now: now)
                claimed.append(task)
            }
            return claimed
        }
    }

    /// Extends the leases of every in-flight task held by one of `owners` (live sessions), in one statement.
    /// - Returns: How many leases were extended.
    @discardableResult
    public func renewLeases(owners: [String], now: Date) async throws -> Int {
        guard !owners.isEmpty else { return 0 }
        let logger = self.logger
        let until = now.addingTimeInterval(policy.leaseDuration.seconds)
        return try await database.withConnection("renew task leases") { connection in
            // The bulk form of TaskStateMachine.renewLease: same condition, same new expiry.
            let rows = try await connection.query(
                """
                UPDATE tasks SET lease_expires_at = \(until), updated_at = \(now)
                WHERE lease_owner = ANY(\(owners)) AND state IN ('assigned', 'running')
                RETURNING id
                """, logger: logger)
            var count = 0
            for try await _ in rows.decode(UUID.self) { count += 1 }
            return count
        }
    }

    /// One expired lease the sweep handled.
    public struct Expired: Sendable, Equatable {
        public var taskID: UUID
        public var nodeID: UUID
        public var action: TaskStateMachine.Action
    }

    /// Retries (or fails, when out of attempts) every assigned or running task whose lease ran out.
    public func expireLeases(now: Date, limit: Int = 500) async throws -> [Expired] {
        let logger = self.logger
        let policy = self.policy
        return try await database.transaction("expire task leases") { connection in
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.columns) FROM tasks
                WHERE state IN ('assigned', 'running') AND lease_expires_at <= \(now)
                ORDER BY lease_expires_at LIMIT \(limit)
                FOR UPDATE SKIP LOCKED
                """, logger: logger)
            var expired: [TaskRecord] = []
            for try await row in rows.decode(Self.RowType.self) { expired.append(try Self.record(from: row)) }
            var out: [Expired] = []
            for task in expired {
                var machine = Self.machine(task, policy: policy)
                let action = machine.leaseExpired(now: now)
                switch action {
                case .retry, .finish:
                    try await Self.write(machine, id: task.id, now: now, on: connection, logger: logger)
                case .giveUp(let failure):
                    try await Self.write(machine, id: task.id, now: now, error: failure, on: connection, logger: logger)
                default:
                    continue
                }
                out.append(Expired(taskID: task.id, nodeID: task.nodeID, action: action))
            }
            return out
        }
    }

    /// The node's agent started an attempt.
    @discardableResult
    public func accepted(taskID: UUID, nodeID: UUID, attempt: Int, now: Date) async throws -> TaskStateMachine.Action {
        try await transition("record an accepted task", taskID: taskID, nodeID: nodeID, now: now) { machine in
            (machine.accepted(attempt: attempt, now: now), nil)
        }
    }

    /// The node's agent reported progress.
    @discardableResult
    public func progress(taskID: UUID, nodeID: UUID, progress: JSONValue, now: Date) async throws
        -> TaskStateMachine.Action
    {
        try await transition("record task progress", taskID: taskID, nodeID: nodeID, now: now) { machine in
            (machine.progress(now: now), Columns(progress: progress))
        }
    }

    /// The node's agent reported a result. A result for a finished task changes nothing (``TaskStateMachine/Action/duplicateResult``).
    @discardableResult
    public func result(_ result: TaskResult, nodeID: UUID, now: Date) async throws -> TaskStateMachine.Action {
        try await transition("record a task result", taskID: result.taskID, nodeID: nodeID, now: now) { machine in
            let action = machine.result(
                result.outcome, attempt: result.attempt, retryable: TaskRetryPolicy.isRetryable(result.error), now: now)
            switch action {
            case .finish, .retry:
                return (action, Columns(result: result.result, error: result.error))
            default:
                return (action, nil)
            }
        }
    }

    // MARK: - Rows

    /// Extra columns an event writes besides the machine's fields.
    struct Columns: Sendable {
        var progress: JSONValue?
        var result: JSONValue?
        var error: TaskFailure?
    }

    /// Loads a task of `nodeID` for update, applies `event` and writes the outcome back.
    /// - Throws: ``MusterError`` `.notFound` when the node has no such task.
    private func transition(
        _ operation: String, taskID: UUID, nodeID: UUID, now: Date,
        _ event: @escaping @Sendable (inout TaskStateMachine) -> (TaskStateMachine.Action, Columns?)
    ) async throws -> TaskStateMachine.Action {
        let logger = self.logger
        let policy = self.policy
        return try await database.transaction(operation) { connection in
            let task = try await Self.load(id: taskID, nodeID: nodeID, lock: true, on: connection, logger: logger)
            var machine = Self.machine(task, policy: policy)
            let (action, columns) = event(&machine)
            switch action {
            case .none, .duplicateResult, .stale, .refuse:
                return action
            case .update, .deliver, .finish, .retry, .giveUp, .cancelled:
                try await Self.write(
                    machine, id: taskID, now: now, progress: columns?.progress, result: columns?.result,
                    error: columns?.error, on: connection, logger: logger)
                return action
            }
        }
    }

    static func machine(_ task: TaskRecord, policy: TaskRetryPolicy) -> TaskStateMachine {
        TaskStateMachine(
            state: task.state, attempts: task.attempts, maxAttempts: task.maxAttempts, leaseOwner: task.leaseOwner,
            leaseExpiresAt: task.leaseExpiresAt, notBefore: task.notBefore, policy: policy)
    }

    static func apply(_ machine: TaskStateMachine, to task: inout TaskRecord, now: Date) {
        task.state = machine.state
        task.attempts = machine.attempts
        task.leaseOwner = machine.leaseOwner
        task.leaseExpiresAt = machine.leaseExpiresAt
        task.notBefore = machine.notBefore
        task.updatedAt = now
    }

    private static func write(
        _ machine: TaskStateMachine, id: UUID, now: Date, progress: JSONValue? = nil, result: JSONValue? = nil,
        error: TaskFailure? = nil, on connection: PostgresConnection, logger: Logger
    ) async throws {
        let progressText = progress?.jsonText
        let resultText = result?.jsonText
        let errorText = try error.map { try MusterJSON.string($0) }
        let finishedAt: Date? = machine.state.isFinal ? now : nil
        try await connection.run(
            """
            UPDATE tasks SET state = \(machine.state.rawValue), attempts = \(machine.attempts),
                lease_owner = \(machine.leaseOwner), lease_expires_at = \(machine.leaseExpiresAt),
                not_before = \(machine.notBefore), updated_at = \(now), finished_at = \(finishedAt),
                progress = COALESCE(\(progressText)::jsonb, progress),
                result = COALESCE(\(resultText)::jsonb, result),
                error = COALESCE(\(errorText)::jsonb, error)
            WHERE id = \(id)
            """, logger: logger)
    }

    private static func load(
        id: UUID, nodeID: UUID?, lock: Bool, on connection: PostgresConnection, logger: Logger
    ) async throws -> TaskRecord {
        let rows = try await connection.query(
            """
            SELECT \(unescaped: columns) FROM tasks
            WHERE id = \(id) AND (\(nodeID)::uuid IS NULL OR node_id = \(nodeID)) \(unescaped: lock ? "FOR UPDATE" : "")
            """, logger: logger)
        for try await row in rows.decode(RowType.self) { return try record(from: row) }
        if let nodeID {
            throw MusterError(.notFound, "node \(nodeID) has no task \(id)")
        }
        throw MusterError(.notFound, "there is no task with id \(id)", hint: "`muster tasks ls` lists the tasks")
    }

    private typealias RowType = (
        UUID, UUID, String, String, String, Int, Int, String?, Date?, Date?, String?, String?, String?, UUID?, Int?,
        Date, Date, Date?
    )
    private static let columns = """
        id, node_id, kind, spec::text, state, attempts, max_attempts, lease_owner, lease_expires_at, not_before,
        progress::text, result::text, error::text, workflow_id, step_index, created_at, updated_at, finished_at
        """

    private static func record(from row: RowType) throws -> TaskRecord {
        let (
            id, nodeID, kind, specText, stateText, attempts, maxAttempts, leaseOwner, leaseExpiresAt, notBefore,
            progressText, resultText, errorText, workflowID, stepIndex, createdAt, updatedAt, finishedAt
        ) = row
        guard let state = TaskState(rawValue: stateText) else {
            throw MusterError(.internal, "task \(id) has an unknown state '\(stateText)' in the database")
        }
        return TaskRecord(
            id: id, nodeID: nodeID, kind: kind, spec: try JSONValue(parsing: specText), state: state,
            attempts: attempts, maxAttempts: maxAttempts, leaseOwner: leaseOwner, leaseExpiresAt: leaseExpiresAt,
            notBefore: notBefore, progress: try progressText.map { try JSONValue(parsing: $0) },
            result: try resultText.map { try JSONValue(parsing: $0) },
            error: try errorText.map { try MusterJSON.decode(TaskFailure.self, from: $0) }, workflowID: workflowID,
            stepIndex: stepIndex, createdAt: createdAt, updatedAt: updatedAt, finishedAt: finishedAt)
    }
}
