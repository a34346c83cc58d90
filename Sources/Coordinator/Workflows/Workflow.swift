import Foundation
import Shared

/// Where a workflow is (DESIGN §4).
///
/// `running → succeeded | failed`; `failed → running` (resume) or `→ rolling-back` (rollback);
/// `succeeded → rolling-back` (an operator may undo a finished seed); `rolling-back → rolled-back | rollback-failed`;
/// `rollback-failed → rolling-back` (rollback again continues from the failed compensation).
public enum WorkflowState: String, Codable, Sendable, CaseIterable {
    case running
    case failed
    case succeeded
    case rollingBack = "rolling-back"
    case rolledBack = "rolled-back"
    case rollbackFailed = "rollback-failed"

    /// The runner has work to do.
    public var isActive: Bool { self == .running || self == .rollingBack }
    /// Nothing will change unless an operator acts.
    public var isSettled: Bool { !isActive }
}

/// One step's state.
public enum WorkflowStepState: String, Codable, Sendable {
    case pending
    case running
    case succeeded
    case failed
}

/// A step: one task on the workflow's node, with what undoes it.
public struct WorkflowStep: Codable, Sendable, Equatable {
    /// Where the service is down: from the start of the step that `opens` the window to the end of the one that
    /// `closes` it (the seed's maintenance window).
    public enum Window: String, Codable, Sendable {
        case opens
        case closes
    }

    public var name: String
    public var kind: String
    public var spec: JSONValue
    public var maxAttempts: Int
    public var window: Window?
    /// Compensating steps, run by a rollback when this step was started.
    public var undo: [WorkflowStep]?
    /// Position of a compensating step in a rollback: 0 stop, 1 restore, 2 start, 3 verify.
    public var order: Int?

    // Progress (set by the runner).
    public var state: WorkflowStepState
    /// Tasks created for this step so far (a resume creates a new one; 0: not started).
    public var epoch: Int
    public var taskID: UUID?
    public var startedAt: Date?
    public var finishedAt: Date?
    public var result: JSONValue?
    public var error: TaskFailure?
    /// The current task's state and progress, filled in when a workflow is shown (not stored).
    public var task: TaskView?

    public struct TaskView: Codable, Sendable, Equatable {
        public var state: TaskState
        public var attempts: Int
        public var progress: JSONValue?
    }

    public init(
        name: String, kind: TaskKind, spec: JSONValue, maxAttempts: Int = 1, window: Window? = nil,
        undo: [WorkflowStep]? = nil, order: Int? = nil
    ) {
        self.name = name
        self.kind = kind.rawValue
        self.spec = spec
        self.maxAttempts = maxAttempts
        self.window = window
        self.undo = undo
        self.order = order
        self.state = .pending
        self.epoch = 0
    }

    private enum CodingKeys: String, CodingKey {
        case name, kind, spec, maxAttempts, window, undo, order, state, epoch, taskID, startedAt, finishedAt, result
        case error, task
    }

    /// Encodes the task id in lower case, as `muster tasks` shows task ids.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(kind, forKey: .kind)
        try c.encode(spec, forKey: .spec)
        try c.encode(maxAttempts, forKey: .maxAttempts)
        try c.encodeIfPresent(window, forKey: .window)
        try c.encodeIfPresent(undo, forKey: .undo)
        try c.encodeIfPresent(order, forKey: .order)
        try c.encode(state, forKey: .state)
        try c.encode(epoch, forKey: .epoch)
        try c.encodeIfPresent(taskID?.uuidString.lowercased(), forKey: .taskID)
        try c.encodeIfPresent(startedAt, forKey: .startedAt)
        try c.encodeIfPresent(finishedAt, forKey: .finishedAt)
        try c.encodeIfPresent(result, forKey: .result)
        try c.encodeIfPresent(error, forKey: .error)
        try c.encodeIfPresent(task, forKey: .task)
    }

    /// How long the step ran, if it finished.
    public var seconds: Double? {
        guard let startedAt, let finishedAt else { return nil }
        return finishedAt.timeIntervalSince(startedAt)
    }
}

/// A workflow as stored and as `muster workflow show` prints it.
public struct WorkflowRecord: Codable, Sendable, Equatable {
    public var id: UUID
    public var kind: String
    public var nodeID: UUID
    /// sha256 of what was asked (node, profile, options): the same request again is the same workflow.
    public var fingerprint: String
    /// The request (for `seed-cluster`: the profile and the options).
    public var spec: JSONValue
    public var state: WorkflowState
    public var steps: [WorkflowStep]
    /// The compensating steps, fixed when a rollback starts.
    public var rollback: [WorkflowStep]?
    /// Index of the step being worked on in `steps` (or in `rollback` while rolling back).
    public var currentStep: Int
    public var error: TaskFailure?
    public var createdBy: String
    public var createdAt: Date
    public var updatedAt: Date
    public var finishedAt: Date?

    private enum CodingKeys: String, CodingKey {
        case id, kind, nodeID, fingerprint, spec, state, steps, rollback, currentStep, error, createdBy, createdAt
        case updatedAt, finishedAt
    }

    /// Encodes ids in lower case, as `muster nodes` and `muster tasks` show them.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id.uuidString.lowercased(), forKey: .id)
        try c.encode(kind, forKey: .kind)
        try c.encode(nodeID.uuidString.lowercased(), forKey: .nodeID)
        try c.encode(fingerprint, forKey: .fingerprint)
        try c.encode(spec, forKey: .spec)
        try c.encode(state, forKey: .state)
        try c.encode(steps, forKey: .steps)
        try c.encodeIfPresent(rollback, forKey: .rollback)
        try c.encode(currentStep, forKey: .currentStep)
        try c.encodeIfPresent(error, forKey: .error)
        try c.encode(createdBy, forKey: .createdBy)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encodeIfPresent(finishedAt, forKey: .finishedAt)
    }

    /// The steps a rollback would run now: the compensations of every started step, stop → restore → start →
    /// verify, each once.
    public var rollbackPlan: [WorkflowStep] {
        if let rollback { return rollback }
        return Self.compensations(of: steps)
    }

    static func compensations(of steps: [WorkflowStep]) -> [WorkflowStep] {
        var seen = Set<String>()
        var plan: [WorkflowStep] = []
        for step in steps where step.epoch > 0 {
            for undo in step.undo ?? [] where seen.insert(undo.name).inserted {
                plan.append(undo)
            }
        }
        // Stable: equal orders keep the forward order (restores in the order their edits happened).
        return plan.enumerated().sorted { ($0.element.order ?? 1, $0.offset) < ($1.element.order ?? 1, $1.offset) }
            .map(\.element)
    }

    /// The service was down from the start of the step that opens the window until the end of the one that
    /// closes it (or until now/the failure, if it has not closed).
    public var maintenanceWindow: (start: Date, end: Date?)? {
        guard let opening = steps.first(where: { $0.window == .opens }), let start = opening.startedAt else {
            return nil
        }
        let closing = steps.last(where: { $0.window == .closes })
        return (start, closing?.state == .succeeded ? closing?.finishedAt : nil)
    }
}

/// The runner's decisions, without the database: what a workflow does next given its current task's outcome.
public struct WorkflowProgression: Sendable {
    public var workflow: WorkflowRecord

    /// What the runner must do after ``advance(now:taskOutcome:)``.
    public enum Next: Sendable, Equatable {
        /// Create a task for this step (index into the active list) and record it.
        case createTask(index: Int, step: WorkflowStep, rollback: Bool)
        /// Wait for the current task.
        case wait
        /// The workflow settled (succeeded, failed, rolled back or rollback failed).
        case settled
    }

    /// What became of the current step's task.
    public enum TaskOutcome: Sendable, Equatable {
        case running
        case succeeded(result: JSONValue?, finishedAt: Date)
        case failed(TaskFailure, finishedAt: Date)
    }

    public init(_ workflow: WorkflowRecord) {
        self.workflow = workflow
    }

    private var inRollback: Bool { workflow.state == .rollingBack }

    private var activeSteps: [WorkflowStep] {
        get { inRollback ? (workflow.rollback ?? []) : workflow.steps }
        set {
            if inRollback { workflow.rollback = newValue } else { workflow.steps = newValue }
        }
    }

    /// The current step, if the workflow is active and not past its last step.
    public var currentStep: WorkflowStep? {
        guard workflow.state.isActive, workflow.currentStep < activeSteps.count else { return nil }
        return activeSteps[workflow.currentStep]
    }

    /// Applies the current task's outcome (nil: the step has no task yet) and says what to do next.
    public mutating func advance(now: Date, taskOutcome: TaskOutcome?) -> Next {
        guard workflow.state.isActive else { return .settled }
        var steps = activeSteps
        let index = workflow.currentStep
        guard index < steps.count else {
            finish(now: now)
            return .settled
        }
        guard steps[index].taskID != nil, let taskOutcome else {
            return .createTask(index: index, step: steps[index], rollback: inRollback)
        }
        switch taskOutcome {
        case .running:
            return .wait
        case .succeeded(let result, let finishedAt):
            steps[index].state = .succeeded
            steps[index].finishedAt = finishedAt
            steps[index].result = result
            steps[index].error = nil
            activeSteps = steps
            workflow.currentStep = index + 1
            workflow.updatedAt = now
            guard index + 1 < steps.count else {
                finish(now: now)
                return .settled
            }
            return .createTask(index: index + 1, step: steps[index + 1], rollback: inRollback)
        case .failed(let failure, let finishedAt):
            steps[index].state = .failed
            steps[index].finishedAt = finishedAt
            steps[index].error = failure
            activeSteps = steps
            workflow.error = TaskFailure(
                code: MusterError.Code(wireName: failure.code),
                message: "step \(index + 1) (\(steps[index].name)) failed: \(failure.message)", details: failure.details)
            workflow.state = inRollback ? .rollbackFailed : .failed
            workflow.updatedAt = now
            workflow.finishedAt = now
            return .settled
        }
    }

    /// Records the task created for the current step.
    public mutating func started(index: Int, taskID: UUID, now: Date) {
        var steps = activeSteps
        steps[index].taskID = taskID
        steps[index].epoch += 1
        steps[index].state = .running
        steps[index].startedAt = now
        steps[index].finishedAt = nil
        steps[index].error = nil
        activeSteps = steps
        workflow.currentStep = index
        workflow.updatedAt = now
    }

    private mutating func finish(now: Date) {
        workflow.state = inRollback ? .rolledBack : .succeeded
        workflow.error = nil
        workflow.updatedAt = now
        workflow.finishedAt = now
    }

    /// `muster workflow resume`: a failed workflow continues from its failed step with a new task (and a failed
    /// rollback from its failed compensation).
    /// - Throws: ``MusterError`` `.conflict` from any other state.
    public mutating func resume(now: Date) throws {
        switch workflow.state {
        case .failed:
            workflow.state = .running
        case .rollbackFailed:
            workflow.state = .rollingBack
        default:
            throw MusterError(
                .conflict, "workflow \(workflow.id.uuidString.lowercased()) is \(workflow.state.rawValue); only a failed one resumes")
        }
        var steps = activeSteps
        if workflow.currentStep < steps.count {
            steps[workflow.currentStep].taskID = nil
            steps[workflow.currentStep].state = .pending
            activeSteps = steps
        }
        workflow.error = nil
        workflow.finishedAt = nil
        workflow.updatedAt = now
    }

    /// `muster workflow rollback`: runs the compensations of every started step.
    /// - Throws: ``MusterError`` `.conflict` while the workflow runs or after it was rolled back.
    public mutating func startRollback(now: Date) throws {
        switch workflow.state {
        case .failed, .succeeded:
            workflow.rollback = WorkflowRecord.compensations(of: workflow.steps)
            workflow.state = .rollingBack
            workflow.currentStep = 0
        case .rollbackFailed:
            try resume(now: now)
            return
        case .running, .rollingBack:
            throw MusterError(
                .conflict, "workflow \(workflow.id.uuidString.lowercased()) is \(workflow.state.rawValue)",
                hint: "wait until it stops (a failed step stops it), or cancel its current task with `muster tasks cancel`")
        case .rolledBack:
            throw MusterError(.conflict, "workflow \(workflow.id.uuidString.lowercased()) was already rolled back")
        }
        workflow.error = nil
        workflow.finishedAt = nil
        workflow.updatedAt = now
    }
}
