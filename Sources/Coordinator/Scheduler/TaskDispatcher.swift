import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Shared
import Synchronization

/// What the agent listener tells the task machinery about node sessions and task messages.
public protocol TaskSessionHandler: Sendable {
    /// A node session is established (`welcome` was sent): tasks may be delivered on `outbound`.
    func sessionOpened(
        nodeID: UUID, connectionID: UInt64, hello: Hello, outbound: NIOAsyncChannelOutboundWriter<Envelope>) async
    /// The session ended.
    func sessionClosed(nodeID: UUID, connectionID: UInt64) async
    /// A task message from the node (`taskAccepted`, `taskProgress`, `taskResult`). Returns the reply, if any.
    func received(_ message: Message, nodeID: UUID, connectionID: UInt64) async -> Message?
}

/// Hands pending tasks to the nodes whose sessions this coordinator holds and records what the agents report
/// (DESIGN §4, §10).
///
/// A task is delivered when its node's session opens, when it is created (the admin API calls
/// ``dispatch(nodeID:)``) and on every tick. Each delivery is leased to the *connection* that carries it
/// (owner `<coordinator instance>/<connection>`): every tick renews the leases of live connections, so when a
/// session drops (agent killed, network gone) its leases run out and the sweep puts the tasks back to
/// `pending` with a backoff, from where the node's next session takes them again. The agent's journal makes
/// the repeated delivery safe.
public final class TaskDispatcher: TaskSessionHandler, Service {
    public struct Configuration: Sendable {
        /// How often leases are renewed, pending tasks claimed and expired leases swept.
        public var tickInterval: Duration
        /// Most tasks delivered to one node per claim.
        public var batchSize: Int

        public init(tickInterval: Duration = .seconds(1), batchSize: Int = 32) {
            self.tickInterval = tickInterval
            self.batchSize = batchSize
        }
    }

    private struct Session: Sendable {
        var connectionID: UInt64
        var outbound: NIOAsyncChannelOutboundWriter<Envelope>
    }

    public let store: TaskStore
    public let configuration: Configuration
    /// Distinguishes this coordinator's leases from those of other replicas on the same database.
    public let instanceID = UUID()
    let logger: Logger
    let now: @Sendable () -> Date
    private let sessions = Mutex<[UUID: Session]>([:])
    private let finishedHook = Mutex<(@Sendable () -> Void)?>(nil)

    /// Called whenever an agent reports a result or a task is cancelled (the workflow runner wakes up on it).
    public func onTaskFinished(_ hook: @escaping @Sendable () -> Void) {
        finishedHook.withLock { $0 = hook }
    }

    private func taskFinished() {
        finishedHook.withLock { $0 }?()
    }

    public init(
        store: TaskStore, configuration: Configuration = Configuration(),
        now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger
    ) {
        self.store = store
        self.configuration = configuration
        self.now = now
        self.logger = logger
    }

    /// The lease owner for tasks delivered over one connection.
    func owner(connectionID: UInt64) -> String {
        "\(instanceID.uuidString.lowercased())/\(connectionID)"
    }

    /// Nodes with a live session here.
    public var connectedNodes: [UUID] { sessions.withLock { Array($0.keys) } }

    // MARK: - Service

    public func run() async throws {
        for await _ in AsyncTimerSequence.repeating(every: configuration.tickInterval).cancelOnGracefulShutdown() {
            await tick()
        }
    }

    /// Renews the leases of live sessions, sweeps expired leases and delivers pending tasks to every node with a
    /// session here. Errors (database away) are logged; the next tick tries again.
    public func tick() async {
        let live = sessions.withLock { $0 }
        let at = now()
        do {
            try await store.renewLeases(owners: live.values.map { owner(connectionID: $0.connectionID) }, now: at)
            for expired in try await store.expireLeases(now: at) {
                logger.notice(
                    "task lease expired",
                    metadata: ["task": "\(expired.taskID)", "node": "\(expired.nodeID)", "action": "\(expired.action)"])
            }
        } catch {
            logger.debug("task tick skipped", metadata: ["error": "\(error)"])
        }
        for nodeID in live.keys { await dispatch(nodeID: nodeID) }
    }

    /// Delivers the node's pending tasks if this coordinator holds its session (otherwise the replica holding
    /// it will, on its tick).
    public func dispatch(nodeID: UUID) async {
        guard let session = sessions.withLock({ $0[nodeID] }) else { return }
        let claimed: [TaskRecord]
        do {
            claimed = try await store.claim(
                nodeID: nodeID, owner: owner(connectionID: session.connectionID), limit: configuration.batchSize,
                now: now())
        } catch {
            logger.warning("cannot claim tasks", metadata: ["node": "\(nodeID)", "error": "\(error)"])
            return
        }
        for task in claimed {
            do {
                try await session.outbound.write(
                    try Message.assignTask(
                        AssignTask(taskID: task.id, kind: task.kind, spec: task.spec, attempt: task.attempts)
                    ).envelope())
                logger.info(
                    "task assigned",
                    metadata: [
                        "task": "\(task.id)", "node": "\(nodeID)", "kind": "\(task.kind)",
                        "attempt": "\(task.attempts)",
                    ])
            } catch {
                // The lease is not renewed once the session is gone, so the sweep retries the task.
                logger.notice(
                    "could not send a task; its lease will expire",
                    metadata: ["task": "\(task.id)", "node": "\(nodeID)", "error": "\(error)"])
            }
        }
    }

    /// Cancels a task; tells its node to stop it when this coordinator holds the node's session.
    public func cancel(taskID: UUID, actor: String) async throws -> TaskRecord {
        let (task, notify) = try await store.cancel(id: taskID, now: now(), actor: actor)
        taskFinished()
        if notify, let session = sessions.withLock({ $0[task.nodeID] }) {
            try? await session.outbound.write(try Message.cancelTask(CancelTask(taskID: taskID)).envelope())
        }
        return task
    }

    // MARK: - TaskSessionHandler

    public func sessionOpened(
        nodeID: UUID, connectionID: UInt64, hello: Hello, outbound: NIOAsyncChannelOutboundWriter<Envelope>
    ) async {
        sessions.withLock { $0[nodeID] = Session(connectionID: connectionID, outbound: outbound) }
        if !hello.finishedTaskIDs.isEmpty {
            logger.info(
                "node reconnected with unacknowledged task results; it re-sends them",
                metadata: ["node": "\(nodeID)", "tasks": "\(hello.finishedTaskIDs.count)"])
        }
        await dispatch(nodeID: nodeID)
    }

    public func sessionClosed(nodeID: UUID, connectionID: UInt64) async {
        sessions.withLock { sessions in
            if sessions[nodeID]?.connectionID == connectionID { sessions[nodeID] = nil }
        }
    }

    public func received(_ message: Message, nodeID: UUID, connectionID: UInt64) async -> Message? {
        let at = now()
        do {
            switch message {
            case .taskAccepted(let accepted):
                try await store.accepted(taskID: accepted.taskID, nodeID: nodeID, attempt: accepted.attempt, now: at)
                return nil
            case .taskProgress(let progress):
                try await store.progress(taskID: progress.taskID, nodeID: nodeID, progress: progress.progress, now: at)
                return nil
            case .taskResult(let result):
                let action = try await store.result(result, nodeID: nodeID, now: at)
                taskFinished()
                logger.info(
                    "task result",
                    metadata: [
                        "task": "\(result.taskID)", "node": "\(nodeID)", "outcome": "\(result.outcome.rawValue)",
                        "attempt": "\(result.attempt)", "action": "\(action)",
                    ])
                return .taskResultAck(TaskResultAck(taskID: result.taskID))
            default:
                return nil
            }
        } catch let error as MusterError where error.code == .notFound {
            // Not this node's task (or deleted): nothing to record; stop the agent from re-sending a result.
            logger.notice("task message for an unknown task", metadata: ["node": "\(nodeID)", "error": "\(error)"])
            if case .taskResult(let result) = message { return .taskResultAck(TaskResultAck(taskID: result.taskID)) }
            return nil
        } catch {
            // Unacknowledged: the agent re-sends the result when it reconnects.
            logger.warning("cannot record a task message", metadata: ["node": "\(nodeID)", "error": "\(error)"])
            return nil
        }
    }
}
