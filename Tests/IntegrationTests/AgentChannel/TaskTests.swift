import Foundation
import Logging
import NIOCore
import NIOPosix
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Agent
@testable import Coordinator

/// Tasks end to end in one process: the real dispatcher and store on PostgreSQL, the real listener and agent
/// session over mutual TLS, the real task runner with its journal and the real `checkHealth` handler.
@Suite("Tasks: assignment, results, leases, retries, journal (real TLS + PostgreSQL)")
struct TaskTests {
    /// Runs a joined agent (task runner + session, as `muster-agent run` assembles them) while `body` runs;
    /// cancelling it at the end is a hard stop, like a killed process (nothing is journaled for unfinished tasks).
    static func withAgent(
        _ fx: ChannelFixture, stateDirectory: String,
        _ body: @Sendable (CoordinatorSession, TaskRunner) async throws -> Void
    ) async throws {
        let runner = try AgentServices.makeTaskRunner(
            configuration: AgentConfiguration(stateDirectory: stateDirectory), logger: fx.logger)
        let session = CoordinatorSession(
            configuration: .init(
                stateDirectory: stateDirectory, backoff: Backoff(base: .milliseconds(50), cap: .milliseconds(200))),
            tasks: runner, logger: fx.logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runner.run() }
            group.addTask { try await session.run() }
            defer { group.cancelAll() }
            try await ChannelFixture.eventually("the agent's session is established") { session.status.connected }
            try await body(session, runner)
        }
    }

    static func waitForState(
        _ fx: ChannelFixture, _ id: UUID, _ states: Set<TaskState>, _ what: String
    ) async throws -> TaskRecord {
        try await ChannelFixture.eventually(what) { states.contains(try await fx.tasks.show(id: id).state) }
        return try await fx.tasks.show(id: id)
    }

    @Test func checkHealthRunsOnTheNodeAndItsResultIsStored() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, runner in
                let spec = try JSONValue(
                    encoding: CheckHealth.Spec(tcp: ["127.0.0.1:\(fx.address.port)"], paths: [stateDirectory]))
                let created = try await fx.tasks.create(
                    nodeID: identity.nodeID, kind: .checkHealth, spec: spec, now: fx.clock.now, actor: "test")
                #expect(created.state == .pending)
                // The admin API wakes the dispatcher the same way.
                await fx.dispatcher.dispatch(nodeID: identity.nodeID)
                let done = try await Self.waitForState(fx, created.id, [.succeeded, .failed], "the task finished")
                #expect(done.state == .succeeded)
                #expect(done.attempts == 1)
                #expect(done.finishedAt != nil)
                #expect(done.leaseOwner == nil)
                let report = try #require(try done.result?.decode(CheckHealth.Report.self))
                #expect(report.healthy)
                #expect(report.checks.map(\.kind) == [.path, .tcp])
                #expect(report.checks.allSatisfy { $0.ok })
                #expect(report.report.agentVersion == MusterVersion.current)
                #expect(runner.statistics.runs == 1)
                // The journal holds the result and the coordinator's acknowledgement.
                try await ChannelFixture.eventually("the result is acknowledged") {
                    runner.journal.unacknowledged.isEmpty
                }
                #expect(runner.journal.result(of: created.id)?.outcome == .succeeded)
            }
        }
    }

    @Test func aDuplicateDeliveryOfAFinishedTaskIsAnsweredFromTheJournal() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, runner in
                let created = try await fx.tasks.create(
                    nodeID: identity.nodeID, kind: .checkHealth,
                    spec: try JSONValue(encoding: CheckHealth.Spec(paths: [stateDirectory])), now: fx.clock.now,
                    actor: "test")
                await fx.dispatcher.dispatch(nodeID: identity.nodeID)
                let first = try await Self.waitForState(fx, created.id, [.succeeded, .failed], "the task finished")
                #expect(first.state == .succeeded)
                #expect(runner.statistics.runs == 1)

                // At-least-once delivery: the coordinator hands the task out again (as after losing the result).
                let (name, _) = try Self.databaseName(fx)
                try PostgresHarnessSQL.run(
                    name, "UPDATE tasks SET state = 'pending', finished_at = NULL WHERE id = '\(created.id)'")
                await fx.dispatcher.dispatch(nodeID: identity.nodeID)
                let second = try await Self.waitForState(fx, created.id, [.succeeded, .failed], "the redelivery ended")
                #expect(second.state == .succeeded)
                #expect(second.attempts == 2)
                #expect(second.result == first.result)
                #expect(runner.statistics.runs == 1)
                #expect(runner.statistics.duplicateDeliveries == 1)
            }
        }
    }

    /// A failed check is a verdict another attempt cannot change (`VERIFICATION_FAILED` is final): the task fails
    /// on its first attempt with the agent's error, although it was allowed three. (Retries after a lost session are
    /// the next test; the backoff between retryable failures is in TaskStateMachineTests and TaskStoreTests.)
    @Test func aFailingCheckFailsAtOnceWithTheError() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, runner in
                let missing = "\(stateDirectory)/does-not-exist"
                let created = try await fx.tasks.create(
                    nodeID: identity.nodeID, kind: .checkHealth,
                    spec: try JSONValue(encoding: CheckHealth.Spec(paths: [missing])), maxAttempts: 3,
                    now: fx.clock.now, actor: "test")
                await fx.dispatcher.dispatch(nodeID: identity.nodeID)
                let done = try await Self.waitForState(fx, created.id, [.succeeded, .failed], "the task gave up")
                #expect(done.state == .failed)
                #expect(done.attempts == 1 && done.maxAttempts == 3)
                #expect(runner.statistics.runs == 1)
                let error = try #require(done.error)
                #expect(error.code == MusterError.Code.verificationFailed.wireName)
                #expect(error.message.contains(missing))
                let details = try #require(try error.details?.decode(CheckHealth.Report.self))
                #expect(!details.healthy)
                #expect(details.checks.first?.ok == false)
            }
        }
    }

    @Test func aTaskOfAKilledAgentIsRetriedWhenItsLeaseExpiresAndRunsOnReconnect() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            try await StallingHTTPServer.with { server in
                let created = try await fx.tasks.create(
                    nodeID: identity.nodeID, kind: .checkHealth,
                    spec: try JSONValue(
                        encoding: CheckHealth.Spec(
                            http: ["http://127.0.0.1:\(server.port)/healthz"], timeoutMilliseconds: 60000)),
                    now: fx.clock.now, actor: "test")

                // First agent process: takes the task, whose HTTP probe hangs, and is killed mid-task.
                try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, runner in
                    let running = try await Self.waitForState(fx, created.id, [.running], "the task runs")
                    #expect(running.attempts == 1)
                    try await ChannelFixture.eventually("the probe reached the server") { server.connections >= 1 }
                    #expect(runner.statistics.runs == 1)
                }
                #expect(try await fx.tasks.show(id: created.id).state == .running)

                // Nobody renews the lease of the dead connection: past its expiry the sweep re-queues the task.
                fx.clock.advance(by: ChannelFixture.taskPolicy.leaseDuration + .seconds(1))
                _ = try await Self.waitForState(fx, created.id, [.pending], "the expired lease re-queued the task")

                // The agent comes back; the task is delivered again and this time the server answers.
                server.answerFromNowOn()
                try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, runner in
                    let done = try await Self.waitForState(fx, created.id, [.succeeded, .failed], "the retry finished")
                    #expect(done.state == .succeeded)
                    #expect(done.attempts == 2)
                    #expect(runner.statistics.runs == 1)
                    let report = try #require(try done.result?.decode(CheckHealth.Report.self))
                    #expect(report.checks.first?.detail == "HTTP 200")
                }
            }
        }
    }

    @Test func cancellingARunningTaskStopsItOnTheNode() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            try await StallingHTTPServer.with { server in
                try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, runner in
                    let created = try await fx.tasks.create(
                        nodeID: identity.nodeID, kind: .checkHealth,
                        spec: try JSONValue(
                            encoding: CheckHealth.Spec(
                                http: ["http://127.0.0.1:\(server.port)/"], timeoutMilliseconds: 60000)),
                        now: fx.clock.now, actor: "test")
                    await fx.dispatcher.dispatch(nodeID: identity.nodeID)
                    _ = try await Self.waitForState(fx, created.id, [.running], "the task runs")
                    try await ChannelFixture.eventually("the probe reached the server") { server.connections >= 1 }

                    let cancelled = try await fx.dispatcher.cancel(taskID: created.id, actor: "test")
                    #expect(cancelled.state == .cancelled)
                    // The agent stops the handler, journals the cancellation and the coordinator acknowledges it
                    // without changing the task.
                    try await ChannelFixture.eventually("the agent stopped the task") {
                        runner.journal.result(of: created.id) != nil && runner.journal.unacknowledged.isEmpty
                    }
                    #expect(runner.journal.result(of: created.id)?.error?.code == MusterError.Code.cancelled.wireName)
                    #expect(try await fx.tasks.show(id: created.id).state == .cancelled)
                    await #expect {
                        _ = try await fx.dispatcher.cancel(taskID: created.id, actor: "test")
                    } throws: { ($0 as? MusterError)?.code == .conflict }
                }
            }
        }
    }

    @Test func resultsFinishedWhileDisconnectedAreReportedOnReconnect() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            // A result journaled but never acknowledged (the connection dropped right after the task finished).
            let created = try await fx.tasks.create(
                nodeID: identity.nodeID, kind: .checkHealth, now: fx.clock.now, actor: "test")
            let claimed = try await fx.tasks.claim(nodeID: identity.nodeID, owner: "gone/1", now: fx.clock.now)
            #expect(claimed.map(\.id) == [created.id])
            let journal = try TaskJournal(stateDirectory: stateDirectory)
            try journal.recordFinished(
                TaskResult(
                    taskID: created.id, attempt: 1, outcome: .succeeded, result: .object(["offline": .bool(true)]),
                    finishedAt: Date()))

            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, runner in
                let done = try await Self.waitForState(fx, created.id, [.succeeded, .failed], "the result arrived")
                #expect(done.result == .object(["offline": .bool(true)]))
                #expect(runner.statistics.runs == 0)
                try await ChannelFixture.eventually("the result is acknowledged") {
                    runner.journal.unacknowledged.isEmpty
                }
            }
            // Acknowledged for good: a fresh journal on the same file has nothing left to re-send.
            #expect(try TaskJournal(stateDirectory: stateDirectory).unacknowledged.isEmpty)
        }
    }

    static func databaseName(_ fx: ChannelFixture) throws -> (String, String) {
        (fx.database.configuration.database, fx.database.configuration.redacted)
    }
}

/// `psql` against the fixture's database.
enum PostgresHarnessSQL {
    static func run(_ database: String, _ sql: String) throws {
        try PostgresHarness.psql(try PostgresHarness.server(), database: database, sql: sql)
    }
}

/// A plain HTTP server on 127.0.0.1 that accepts connections but never answers until told to, for a probe that
/// hangs (the agent is killed while it runs).
final class StallingHTTPServer: Sendable {
    let port: Int
    private let state = Mutex<(connections: Int, answer: Bool)>((0, false))

    private init(port: Int) { self.port = port }

    var connections: Int { state.withLock { $0.connections } }

    func answerFromNowOn() { state.withLock { $0.answer = true } }

    static func with(_ body: @Sendable (StallingHTTPServer) async throws -> Void) async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { child in
                child.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        let server = StallingHTTPServer(port: channel.channel.localAddress?.port ?? 0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await serveConnections(of: channel) { connection in
                    let answer = server.state.withLock { state -> Bool in
                        state.connections += 1
                        return state.answer
                    }
                    try? await connection.executeThenClose { requests, responses in
                        for try await _ in requests {
                            guard answer else { continue }
                            try await responses.write(
                                ByteBuffer(string: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
                            return
                        }
                    }
                }
            }
            defer { group.cancelAll() }
            try await body(server)
        }
    }
}
