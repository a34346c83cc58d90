import Foundation
import Logging
import ServiceLifecycle
import Shared
import Synchronization

/// Reports progress of a running task to the coordinator (dropped while disconnected).
public struct TaskProgressReporter: Sendable {
    let send: @Sendable (JSONValue) async -> Void

    public init(_ send: @escaping @Sendable (JSONValue) async -> Void) { self.send = send }

    public func callAsFunction(_ progress: JSONValue) async { await send(progress) }
}

/// Runs one task kind. Every kind is idempotent (running it twice equals running it once).
///
/// Return the result on success; throw ``TaskFailure`` for a failure with details (any other error becomes a
/// failure with its message).
public protocol TaskHandler: Sendable {
    func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue
}

/// The agent's task runner (a `Service`): takes deliveries from the session, runs each task id once with at
/// most ``Configuration/concurrency`` at a time, journals results (``TaskJournal``) and sends
/// `taskAccepted` / `taskProgress` / `taskResult` while a session is attached.
///
/// A repeated delivery of a running task is answered with `taskAccepted` (under the new attempt number); of a
/// finished one with the journaled result, without running it again — except a newer attempt of a failed task,
/// which is the coordinator's retry and runs.
public final class TaskRunner: Service {
    public struct Configuration: Sendable {
        public var concurrency: Int

        public init(concurrency: Int = 4) { self.concurrency = max(1, concurrency) }
    }

    /// Counters for logs and tests.
    public struct Statistics: Sendable, Equatable {
        /// Handler runs started (a repeated delivery does not count).
        public var runs = 0
        public var succeeded = 0
        public var failed = 0
        public var duplicateDeliveries = 0
    }

    public typealias Sink = @Sendable (Message) async -> Void

    private enum Command: Sendable {
        case start(AssignTask)
        case finished(UUID)
    }

    private struct Entry {
        var attempt: Int
        var cancel: AsyncStream<Void>.Continuation?
    }

    private struct State {
        /// Queued or running task ids.
        var active: [UUID: Entry] = [:]
        var sink: Sink?
        var statistics = Statistics()
    }

    public let configuration: Configuration
    public let journal: TaskJournal
    let handlers: [TaskKind: any TaskHandler]
    let logger: Logger
    private let state = Mutex(State())
    private let commands: AsyncStream<Command>
    private let commandContinuation: AsyncStream<Command>.Continuation

    public init(
        configuration: Configuration = Configuration(), journal: TaskJournal, handlers: [TaskKind: any TaskHandler],
        logger: Logger
    ) {
        self.configuration = configuration
        self.journal = journal
        self.handlers = handlers
        self.logger = logger
        (commands, commandContinuation) = AsyncStream.makeStream()
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    // MARK: - Session side

    /// Ids of finished tasks the coordinator has not acknowledged (sent in `hello`).
    public var unacknowledgedTaskIDs: [UUID] { journal.unacknowledged.map(\.taskID) }

    /// Attaches an established session: messages go out through `sink`; unacknowledged results are re-sent.
    public func attach(_ sink: @escaping Sink) async {
        state.withLock { $0.sink = sink }
        for result in journal.unacknowledged { await sink(.taskResult(result)) }
    }

    /// The session ended; results stay in the journal until the next one.
    public func detach() {
        state.withLock { $0.sink = nil }
    }

    /// A delivery from the coordinator.
    public func deliver(_ assign: AssignTask) async {
        // A success answers every later delivery; a failure only repeated deliveries of its own attempt (a newer
        // attempt is the coordinator's retry and runs again).
        if var journaled = journal.result(of: assign.taskID),
            journaled.outcome == .succeeded || journaled.attempt >= assign.attempt
        {
            state.withLock { $0.statistics.duplicateDeliveries += 1 }
            logger.info(
                "task already finished here; re-sending its journaled result", metadata: ["task": "\(assign.taskID)"])
            // Report it under the attempt the coordinator is waiting for.
            journaled.attempt = max(journaled.attempt, assign.attempt)
            await send(.taskResult(journaled))
            return
        }
        let isNew = state.withLock { state -> Bool in
            if state.active[assign.taskID] != nil {
                state.active[assign.taskID]?.attempt = assign.attempt
                state.statistics.duplicateDeliveries += 1
                return false
            }
            state.active[assign.taskID] = Entry(attempt: assign.attempt, cancel: nil)
            return true
        }
        if isNew {
            commandContinuation.yield(.start(assign))
        } else {
            await send(.taskAccepted(TaskAccepted(taskID: assign.taskID, attempt: assign.attempt)))
        }
    }

    /// Stops a queued or running task (its result, `failed`/`CANCELLED`, is journaled like any other).
    public func cancel(_ taskID: UUID) {
        let signal = state.withLock { $0.active[taskID]?.cancel }
        signal?.finish()
    }

    /// The coordinator stored the result of a task.
    public func acknowledge(_ taskID: UUID) {
        do {
            try journal.recordAcknowledged(taskID)
        } catch {
            logger.warning("cannot journal an acknowledgement", metadata: ["task": "\(taskID)", "error": "\(error)"])
        }
    }

    // MARK: - Service

    public func run() async throws {
        var queue: [AssignTask] = []
        var running = 0
        await withDiscardingTaskGroup { group in
            for await command in commands.cancelOnGracefulShutdown() {
                switch command {
                case .start(let assign):
                    queue.append(assign)
                case .finished:
                    running -= 1
                }
                while running < configuration.concurrency, !queue.isEmpty {
                    let next = queue.removeFirst()
                    running += 1
                    group.addTask {
                        await self.execute(next)
                        self.commandContinuation.yield(.finished(next.taskID))
                    }
                }
            }
            // Shutdown: running handlers are cancelled with the group; their tasks are retried by the
            // coordinator when the lease runs out.
            group.cancelAll()
        }
    }

    // MARK: - Running one task

    private func execute(_ assign: AssignTask) async {
        let (cancelled, cancel) = AsyncStream<Void>.makeStream()
        let proceed = state.withLock { state -> Bool in
            guard state.active[assign.taskID] != nil else { return false }
            state.active[assign.taskID]?.cancel = cancel
            state.statistics.runs += 1
            return true
        }
        guard proceed else { return }
        var taskLogger = logger
        taskLogger[metadataKey: "task"] = "\(assign.taskID)"
        taskLogger[metadataKey: "kind"] = "\(assign.kind)"
        taskLogger.info("task started", metadata: ["attempt": "\(assign.attempt)"])
        await send(.taskAccepted(TaskAccepted(taskID: assign.taskID, attempt: assign.attempt)))

        let outcome: Result<JSONValue, TaskFailure>
        if let kind = TaskKind(rawValue: assign.kind), let handler = handlers[kind] {
            let reporter = TaskProgressReporter { [weak self] progress in
                await self?.send(.taskProgress(TaskProgress(taskID: assign.taskID, progress: progress)))
            }
            outcome = await Self.run(handler, spec: assign.spec, progress: reporter, cancelled: cancelled)
        } else {
            outcome = .failure(
                TaskFailure(
                    code: .invalidInput,
                    message: "this agent (\(MusterVersion.current)) cannot run '\(assign.kind)' tasks"))
        }

        if Task.isCancelled {
            // The agent is shutting down: like a crash, nothing is journaled; the coordinator retries the task
            // when its lease runs out.
            state.withLock { _ = $0.active.removeValue(forKey: assign.taskID) }
            taskLogger.notice("task interrupted by shutdown; it will be retried")
            return
        }
        let attempt = state.withLock { $0.active[assign.taskID]?.attempt } ?? assign.attempt
        let result: TaskResult
        switch outcome {
        case .success(let value):
            result = TaskResult(
                taskID: assign.taskID, attempt: attempt, outcome: .succeeded, result: value, finishedAt: Date())
        case .failure(let failure):
            result = TaskResult(
                taskID: assign.taskID, attempt: attempt, outcome: .failed, error: failure, finishedAt: Date())
        }
        do {
            try journal.recordFinished(result)
        } catch {
            // Without the journal entry a repeated delivery would run the task again; it is idempotent.
            taskLogger.error("cannot journal a task result", metadata: ["error": "\(error)"])
        }
        state.withLock { state in
            state.active[assign.taskID] = nil
            if result.outcome == .succeeded {
                state.statistics.succeeded += 1
            } else {
                state.statistics.failed += 1
            }
        }
        taskLogger.info(
            "task finished",
            metadata: ["outcome": "\(result.outcome.rawValue)", "error": "\(result.error?.message ?? "-")"])
        await send(.taskResult(result))
    }

    /// Runs the handler until it returns or the task is cancelled.
    private static func run(
        _ handler: any TaskHandler, spec: JSONValue, progress: TaskProgressReporter, cancelled: AsyncStream<Void>
    ) async -> Result<JSONValue, TaskFailure> {
        await withTaskGroup(of: Result<JSONValue, TaskFailure>?.self) { group in
            group.addTask {
                do {
                    return .success(try await handler.run(spec: spec, progress: progress))
                } catch let failure as TaskFailure {
                    return .failure(failure)
                } catch let error as MusterError {
                    return .failure(TaskFailure(code: error.code, message: error.message))
                } catch is CancellationError {
                    return .failure(TaskFailure(code: .cancelled, message: "the task was cancelled"))
                } catch {
                    return .failure(TaskFailure(code: .internal, message: "\(error)"))
                }
            }
            group.addTask {
                // Ends when cancel() finishes the stream (or this child is cancelled after the handler returned).
                for await _ in cancelled {}
                return Task.isCancelled
                    ? nil : .failure(TaskFailure(code: .cancelled, message: "the task was cancelled"))
            }
            defer { group.cancelAll() }
            while let next = await group.next() {
                if let next { return next }
            }
            return .failure(TaskFailure(code: .cancelled, message: "the task was cancelled"))
        }
    }

    private func send(_ message: Message) async {
        guard let sink = state.withLock({ $0.sink }) else { return }
        await sink(message)
    }
}
