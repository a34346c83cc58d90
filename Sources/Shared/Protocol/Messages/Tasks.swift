import Foundation

/// Coordinator → agent: run a task. Delivery is at least once; the agent runs a task id once and answers a
/// repeated delivery from its journal (or with `taskAccepted` while it still runs).
public struct AssignTask: Codable, Sendable, Equatable {
    public var taskID: UUID
    /// The kind's name; an agent that does not know it answers with a failed ``TaskResult``.
    public var kind: String
    public var spec: JSONValue
    /// 1 for the first attempt.
    public var attempt: Int

    public init(taskID: UUID, kind: String, spec: JSONValue, attempt: Int) {
        self.taskID = taskID
        self.kind = kind
        self.spec = spec
        self.attempt = attempt
    }
}

/// Coordinator → agent: stop a task if it still runs.
public struct CancelTask: Codable, Sendable, Equatable {
    public var taskID: UUID

    public init(taskID: UUID) { self.taskID = taskID }
}

/// Agent → coordinator: the task started (or is already running).
public struct TaskAccepted: Codable, Sendable, Equatable {
    public var taskID: UUID
    public var attempt: Int

    public init(taskID: UUID, attempt: Int) {
        self.taskID = taskID
        self.attempt = attempt
    }
}

/// Agent → coordinator: how far a running task got (free-form per kind).
public struct TaskProgress: Codable, Sendable, Equatable {
    public var taskID: UUID
    public var progress: JSONValue

    public init(taskID: UUID, progress: JSONValue) {
        self.taskID = taskID
        self.progress = progress
    }
}

/// How a task ended on the agent.
public enum TaskOutcome: String, Codable, Sendable, Equatable {
    case succeeded
    case failed
}

/// Why a task failed: a ``MusterError/Code`` wire name, a message and kind-specific details.
public struct TaskFailure: Codable, Sendable, Equatable, Error {
    public var code: String
    public var message: String
    public var details: JSONValue?

    public init(code: MusterError.Code, message: String, details: JSONValue? = nil) {
        self.code = code.wireName
        self.message = message
        self.details = details
    }
}

/// Agent → coordinator: a task finished. Sent again after a reconnect until acknowledged
/// (``TaskResultAck``); a result for a task that is already finished is acknowledged and ignored.
public struct TaskResult: Codable, Sendable, Equatable {
    public var taskID: UUID
    /// The attempt that produced the result.
    public var attempt: Int
    public var outcome: TaskOutcome
    /// Set when `outcome` is `succeeded`.
    public var result: JSONValue?
    /// Set when `outcome` is `failed`.
    public var error: TaskFailure?
    public var finishedAt: Date

    public init(
        taskID: UUID, attempt: Int, outcome: TaskOutcome, result: JSONValue? = nil, error: TaskFailure? = nil,
        finishedAt: Date
    ) {
        self.taskID = taskID
        self.attempt = attempt
        self.outcome = outcome
        self.result = result
        self.error = error
        self.finishedAt = finishedAt
    }
}

/// Coordinator → agent: the result is stored; the agent stops re-reporting it.
public struct TaskResultAck: Codable, Sendable, Equatable {
    public var taskID: UUID

    public init(taskID: UUID) { self.taskID = taskID }
}
