import Foundation
import Logging
import PostgresNIO
import Shared

/// Workflows in PostgreSQL (table `workflows`, migration 5).
///
/// A step's task is inserted in the same transaction that records it in the workflow row (locked `FOR UPDATE`),
/// so a coordinator killed at any point leaves either no task and the step still pending, or the task and the
/// step pointing at it — the next runner tick (of this or another coordinator) carries on from there.
public struct WorkflowStore: Sendable {
    let database: Database
    let logger: Logger

    public init(database: Database, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// What asking for a workflow did.
    public enum StartOutcome: String, Codable, Sendable {
        /// A new workflow was created.
        case created
        /// The same request already succeeded: nothing to do.
        case alreadyDone = "already-done"
        /// The same request had failed: it continues from the failed step.
        case resumed
    }

    /// Starts a workflow of `kind` on a node, or answers with the one that already did the same thing.
    ///
    /// - A previous workflow with the same fingerprint that succeeded → `alreadyDone`; that failed → `resumed`.
    /// - Another workflow of the kind in progress or failed on the node → `.conflict` naming it.
    public func start(
        kind: String, nodeID: UUID, fingerprint: String, spec: JSONValue, steps: [WorkflowStep], now: Date,
        actor: String
    ) async throws -> (WorkflowRecord, StartOutcome) {
        let logger = self.logger
        return try await database.transaction("start a workflow") { connection in
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.columns) FROM workflows
                WHERE node_id = \(nodeID) AND kind = \(kind) AND state <> 'rolled-back'
                ORDER BY created_at DESC LIMIT 1 FOR UPDATE
                """, logger: logger)
            var latest: WorkflowRecord?
            for try await row in rows.decode(RowType.self) { latest = try Self.record(from: row) }
            if let latest {
                let id = latest.id.uuidString.lowercased()
                switch (latest.state, latest.fingerprint == fingerprint) {
                case (.succeeded, true):
                    return (latest, .alreadyDone)
                case (.failed, true):
                    var progression = WorkflowProgression(latest)
                    try progression.resume(now: now)
                    try await Self.write(progression.workflow, on: connection, logger: logger)
                    try await AuditLog.record(
                        on: connection, actor: actor, action: "workflow.resume", target: id, details: ["kind": kind],
                        logger: logger)
                    return (progression.workflow, .resumed)
                case (.running, _), (.rollingBack, _):
                    throw MusterError(
                        .conflict, "workflow \(id) (\(kind)) is \(latest.state.rawValue) on this node",
                        hint: "follow it with `muster workflow show \(id) --follow`")
                case (.succeeded, false):
                    throw MusterError(
                        .conflict, "the node was already set up by workflow \(id) (\(kind)) with a different profile",
                        hint: "roll that one back first (`muster workflow rollback \(id)`), then run again")
                case (.failed, false) where latest.rollbackPlan.isEmpty:
                    // It failed before changing anything (e.g. at the prechecks): nothing to undo, so a new
                    // request with another profile replaces it.
                    var superseded = latest
                    superseded.state = .rolledBack
                    superseded.updatedAt = now
                    try await Self.write(superseded, on: connection, logger: logger)
                    try await AuditLog.record(
                        on: connection, actor: actor, action: "workflow.supersede", target: id, details: ["kind": kind],
                        logger: logger)
                case (.failed, false), (.rollbackFailed, _):
                    throw MusterError(
                        .conflict, "workflow \(id) (\(kind)) \(latest.state == .failed ? "failed" : "failed to roll back") "
                            + "on this node with a different profile",
                        hint: "resume it (`muster workflow resume \(id)`) or roll it back (`muster workflow rollback \(id)`)")
                case (.rolledBack, _):
                    break
                }
            }
            let record = WorkflowRecord(
                id: UUID(), kind: kind, nodeID: nodeID, fingerprint: fingerprint, spec: spec, state: .running,
                steps: steps, rollback: nil, currentStep: 0, error: nil, createdBy: actor, createdAt: now,
                updatedAt: now, finishedAt: nil)
            let stepsText = try MusterJSON.string(record.steps)
            try await connection.run(
                """
                INSERT INTO workflows (id, kind, node_id, fingerprint, spec, state, steps, current_step, created_by,
                                       created_at, updated_at)
                VALUES (\(record.id), \(kind), \(nodeID), \(fingerprint), \(spec.jsonText)::jsonb, 'running',
                        \(stepsText)::jsonb, 0, \(actor), \(now), \(now))
                """, logger: logger)
            try await AuditLog.record(
                on: connection, actor: actor, action: "workflow.create", target: record.id.uuidString.lowercased(),
                details: ["kind": kind, "node": nodeID.uuidString.lowercased()], logger: logger)
            return (record, .created)
        }
    }

    /// Workflows, newest first.
    public func list(nodeID: UUID? = nil, limit: Int = 200) async throws -> [WorkflowRecord] {
        let logger = self.logger
        return try await database.withConnection("list workflows") { connection in
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.columns) FROM workflows
                WHERE (\(nodeID)::uuid IS NULL OR node_id = \(nodeID))
                ORDER BY created_at DESC LIMIT \(limit)
                """, logger: logger)
            var out: [WorkflowRecord] = []
            for try await row in rows.decode(RowType.self) { out.append(try Self.record(from: row)) }
            return out
        }
    }

    /// One workflow, with the state and progress of each step's current task.
    /// - Throws: ``MusterError`` `.notFound`.
    public func show(id: UUID) async throws -> WorkflowRecord {
        let logger = self.logger
        return try await database.withConnection("show a workflow") { connection in
            var record = try await Self.load(id: id, lock: "", on: connection, logger: logger)
            let rows = try await connection.query(
                "SELECT id, state, attempts, progress::text FROM tasks WHERE workflow_id = \(id)", logger: logger)
            var views: [UUID: WorkflowStep.TaskView] = [:]
            for try await (taskID, state, attempts, progress) in rows.decode((UUID, String, Int, String?).self) {
                guard let state = TaskState(rawValue: state) else { continue }
                views[taskID] = .init(
                    state: state, attempts: attempts, progress: try progress.map { try JSONValue(parsing: $0) })
            }
            func withTasks(_ steps: [WorkflowStep]) -> [WorkflowStep] {
                steps.map { step in
                    var step = step
                    step.task = step.taskID.flatMap { views[$0] }
                    return step
                }
            }
            record.steps = withTasks(record.steps)
            record.rollback = record.rollback.map(withTasks)
            return record
        }
    }

    /// `muster workflow resume`.
    public func resume(id: UUID, now: Date, actor: String) async throws -> WorkflowRecord {
        try await change(id: id, action: "workflow.resume", now: now, actor: actor) { try $0.resume(now: now) }
    }

    /// `muster workflow rollback`.
    public func rollback(id: UUID, now: Date, actor: String) async throws -> WorkflowRecord {
        try await change(id: id, action: "workflow.rollback", now: now, actor: actor) { try $0.startRollback(now: now) }
    }

    private func change(
        id: UUID, action: String, now: Date, actor: String,
        _ body: @escaping @Sendable (inout WorkflowProgression) throws -> Void
    ) async throws -> WorkflowRecord {
        let logger = self.logger
        return try await database.transaction(action) { connection in
            var progression = WorkflowProgression(
                try await Self.load(id: id, lock: "FOR UPDATE", on: connection, logger: logger))
            try body(&progression)
            try await Self.write(progression.workflow, on: connection, logger: logger)
            try await AuditLog.record(
                on: connection, actor: actor, action: action, target: id.uuidString.lowercased(),
                details: ["kind": progression.workflow.kind], logger: logger)
            return progression.workflow
        }
    }

    // MARK: - Runner side

    /// Ids of workflows with work to do.
    public func active() async throws -> [UUID] {
        let logger = self.logger
        return try await database.withConnection("list active workflows") { connection in
            let rows = try await connection.query(
                "SELECT id FROM workflows WHERE state IN ('running', 'rolling-back') ORDER BY created_at",
                logger: logger)
            var ids: [UUID] = []
            for try await id in rows.decode(UUID.self) { ids.append(id) }
            return ids
        }
    }

    /// Moves one workflow on: records its current task's outcome and creates the next step's task, in one
    /// transaction. A workflow another coordinator is advancing right now is skipped (`SKIP LOCKED`).
    /// - Returns: The node to deliver a new task to, if one was created.
    public func advance(id: UUID, now: Date) async throws -> UUID? {
        let logger = self.logger
        return try await database.transaction("advance a workflow") { connection in
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.columns) FROM workflows
                WHERE id = \(id) AND state IN ('running', 'rolling-back') FOR UPDATE SKIP LOCKED
                """, logger: logger)
            var found: WorkflowRecord?
            for try await row in rows.decode(RowType.self) { found = try Self.record(from: row) }
            guard let workflow = found else { return nil }
            let before = workflow
            var progression = WorkflowProgression(workflow)
            var outcome: WorkflowProgression.TaskOutcome?
            if let taskID = progression.currentStep?.taskID {
                outcome = try await Self.outcome(of: taskID, on: connection, logger: logger)
            }
            var dispatch: UUID?
            if case .createTask(let index, let step, let rollback) = progression.advance(now: now, taskOutcome: outcome) {
                let taskID = UUID()
                do {
                    _ = try await TaskStore.insert(
                        on: connection, id: taskID, nodeID: workflow.nodeID, kind: try TaskKind(validating: step.kind),
                        spec: step.spec, maxAttempts: step.maxAttempts, workflowID: workflow.id,
                        stepIndex: (rollback ? Self.rollbackStepBase : 0) + index, now: now,
                        actor: "workflow:\(workflow.id.uuidString.lowercased())", logger: logger)
                    progression.started(index: index, taskID: taskID, now: now)
                    dispatch = workflow.nodeID
                } catch let error as MusterError where error.code == .conflict || error.code == .notFound {
                    // The node was forgotten: no task can run there.
                    progression.started(index: index, taskID: taskID, now: now)
                    _ = progression.advance(now: now, taskOutcome: .failed(.init(code: error.code, message: error.message), finishedAt: now))
                }
            }
            if progression.workflow != before {
                try await Self.write(progression.workflow, on: connection, logger: logger)
            }
            return dispatch
        }
    }

    /// `tasks.step_index` of a compensating step: 1000 + its index in the rollback.
    public static let rollbackStepBase = 1000

    private static func outcome(
        of taskID: UUID, on connection: PostgresConnection, logger: Logger
    ) async throws -> WorkflowProgression.TaskOutcome {
        let rows = try await connection.query(
            "SELECT state, result::text, error::text, finished_at, updated_at FROM tasks WHERE id = \(taskID)",
            logger: logger)
        for try await (stateText, result, error, finishedAt, updatedAt) in rows.decode(
            (String, String?, String?, Date?, Date).self)
        {
            switch TaskState(rawValue: stateText) {
            case .succeeded:
                return .succeeded(result: try result.map { try JSONValue(parsing: $0) }, finishedAt: finishedAt ?? updatedAt)
            case .failed:
                let failure =
                    (try? error.map { try MusterJSON.decode(TaskFailure.self, from: $0) })
                    ?? TaskFailure(code: .internal, message: "the task failed without an error")
                return .failed(failure, finishedAt: finishedAt ?? updatedAt)
            case .cancelled:
                return .failed(
                    TaskFailure(code: .cancelled, message: "its task \(taskID.uuidString.lowercased()) was cancelled"),
                    finishedAt: finishedAt ?? updatedAt)
            default:
                return .running
            }
        }
        return .failed(
            TaskFailure(code: .internal, message: "its task \(taskID.uuidString.lowercased()) is missing from the database"),
            finishedAt: Date())
    }

    // MARK: - Rows

    private static func write(_ workflow: WorkflowRecord, on connection: PostgresConnection, logger: Logger) async throws {
        var stored = workflow
        func withoutTasks(_ steps: [WorkflowStep]) -> [WorkflowStep] {
            steps.map { step in
                var step = step
                step.task = nil
                return step
            }
        }
        stored.steps = withoutTasks(stored.steps)
        stored.rollback = stored.rollback.map(withoutTasks)
        let stepsText = try MusterJSON.string(stored.steps)
        let rollbackText = try stored.rollback.map { try MusterJSON.string($0) }
        let errorText = try stored.error.map { try MusterJSON.string($0) }
        try await connection.run(
            """
            UPDATE workflows SET state = \(stored.state.rawValue), steps = \(stepsText)::jsonb,
                rollback = \(rollbackText)::jsonb, current_step = \(stored.currentStep), error = \(errorText)::jsonb,
                updated_at = \(stored.updatedAt), finished_at = \(stored.finishedAt)
            WHERE id = \(stored.id)
            """, logger: logger)
    }

    private static func load(
        id: UUID, lock: String, on connection: PostgresConnection, logger: Logger
    ) async throws -> WorkflowRecord {
        let rows = try await connection.query(
            "SELECT \(unescaped: columns) FROM workflows WHERE id = \(id) \(unescaped: lock)", logger: logger)
        for try await row in rows.decode(RowType.self) { return try record(from: row) }
        throw MusterError(
            .notFound, "there is no workflow with id \(id.uuidString.lowercased())",
            hint: "`muster workflow ls` lists the workflows")
    }

    private typealias RowType = (
        UUID, String, UUID, String, String, String, String, String?, Int, String?, String, Date, Date, Date?
    )
    private static let columns = """
        id, kind, node_id, fingerprint, spec::text, state, steps::text, rollback::text, current_step, error::text,
        created_by, created_at, updated_at, finished_at
        """

    private static func record(from row: RowType) throws -> WorkflowRecord {
        let (
            id, kind, nodeID, fingerprint, specText, stateText, stepsText, rollbackText, currentStep, errorText,
            createdBy, createdAt, updatedAt, finishedAt
        ) = row
        guard let state = WorkflowState(rawValue: stateText) else {
            throw MusterError(.internal, "workflow \(id) has an unknown state '\(stateText)' in the database")
        }
        return WorkflowRecord(
            id: id, kind: kind, nodeID: nodeID, fingerprint: fingerprint, spec: try JSONValue(parsing: specText),
            state: state, steps: try MusterJSON.decode([WorkflowStep].self, from: stepsText),
            rollback: try rollbackText.map { try MusterJSON.decode([WorkflowStep].self, from: $0) },
            currentStep: currentStep, error: try errorText.map { try MusterJSON.decode(TaskFailure.self, from: $0) },
            createdBy: createdBy, createdAt: createdAt, updatedAt: updatedAt, finishedAt: finishedAt)
    }
}
