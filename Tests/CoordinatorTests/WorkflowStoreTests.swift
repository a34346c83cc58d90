import Foundation
import Shared
import TestSupport
import Testing

@testable import Coordinator

/// The workflow engine on real PostgreSQL: steps become tasks one at a time, outcomes move it on, failures stop
/// it, resume and rollback do what `muster workflow` promises, and concurrent runners never duplicate a step.
/// The agent's side is played through ``TaskStore`` (claim → accepted → result), as the dispatcher records it.
@Suite("Workflows on real PostgreSQL")
struct WorkflowStoreTests {
    static let exampleProfile: SeedProfile = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return try! SeedProfile.load(path: root.appendingPathComponent("examples/repo-service/seed.yaml").path)
    }()

    struct Fixture {
        let database: Database
        let store: WorkflowStore
        let tasks: TaskStore
        let node: UUID

        /// Plays the agent: the task is claimed, accepted and finished — a failure on every attempt it has (the
        /// store retries a failed attempt after a backoff, which the claim skips by looking an hour ahead).
        func finish(_ taskID: UUID, ok: Bool = true, message: String = "boom") async throws {
            var now = Date()
            while true {
                let claimed = try await tasks.claim(nodeID: node, owner: "test/1", limit: 100, now: now)
                let attempt = claimed.first { $0.id == taskID }?.attempts ?? 1
                try await tasks.accepted(taskID: taskID, nodeID: node, attempt: attempt, now: now)
                try await tasks.result(
                    TaskResult(
                        taskID: taskID, attempt: attempt, outcome: ok ? .succeeded : .failed,
                        result: ok ? .object(["ok": .bool(true)]) : nil,
                        error: ok ? nil : TaskFailure(code: .unitFailed, message: message), finishedAt: now),
                    nodeID: node, now: now)
                if try await tasks.show(id: taskID).state.isFinal { return }
                now = now.addingTimeInterval(3600)
            }
        }

        /// Advances and returns the workflow as stored.
        func advance(_ id: UUID) async throws -> WorkflowRecord {
            _ = try await store.advance(id: id, now: Date())
            return try await store.show(id: id)
        }

        /// Finishes the current step's task and advances.
        func step(_ id: UUID, ok: Bool = true) async throws -> WorkflowRecord {
            let workflow = try await store.show(id: id)
            let steps = workflow.state == .rollingBack ? workflow.rollback ?? [] : workflow.steps
            let taskID = try #require(steps[workflow.currentStep].taskID)
            try await finish(taskID, ok: ok)
            return try await advance(id)
        }
    }

    static func with(_ body: @Sendable (Fixture) async throws -> Void) async throws {
        try await TestDatabase.with { database, _ in
            let fixture = Fixture(
                database: database, store: WorkflowStore(database: database, logger: TestDatabase.logger),
                tasks: TaskStore(database: database, logger: TestDatabase.logger),
                node: try await TaskStoreTests.node(database))
            try await body(fixture)
        }
    }

    static func start(_ f: Fixture, profile: SeedProfile = exampleProfile) async throws
        -> (WorkflowRecord, WorkflowStore.StartOutcome)
    {
        let fingerprint = try SeedPlanner.fingerprint(nodeID: f.node, profile: profile, replace: false)
        let steps = try SeedPlanner.plan(profile: profile, replace: false, backupName: "seed-test")
        return try await f.store.start(
            kind: SeedPlanner.workflowKind, nodeID: f.node, fingerprint: fingerprint,
            spec: try JSONValue(encoding: profile), steps: steps, now: Date(), actor: "test")
    }

    @Test func theExamplePlanRunsStepByStepToSuccessAndASecondRunIsANoOp() async throws {
        try await Self.with { f in
            let (created, outcome) = try await Self.start(f)
            #expect(outcome == .created)
            let names = created.steps.map(\.name)
            #expect(names.first == "precheck" && names[1] == "backup")
            #expect(names.contains("stop repo-service.service") && names.contains("edit /etc/repo-service/config.json"))
            #expect(created.steps.filter { $0.kind == "syncTree" }.count == 6, "pre-copy and copy per directory")
            let stop = try #require(names.firstIndex(of: "stop repo-service.service"))
            #expect(created.steps[..<stop].filter { $0.kind == "syncTree" }.count == 3, "pre-copies before the stop")
            #expect(created.steps[stop].window == .opens && created.steps.last?.window == .closes)

            var workflow = try await f.advance(created.id)
            #expect(workflow.steps[0].state == .running && workflow.steps[0].task?.state == .pending)
            #expect(try await f.tasks.list(nodeID: f.node).count == 1, "one task at a time")
            // Advancing again while the task runs creates nothing.
            workflow = try await f.advance(created.id)
            #expect(try await f.tasks.list(nodeID: f.node).count == 1)

            while workflow.state == .running {
                workflow = try await f.step(created.id)
            }
            #expect(workflow.state == .succeeded)
            #expect(workflow.steps.allSatisfy { $0.state == .succeeded && $0.epoch == 1 && $0.seconds != nil })
            let tasks = try await f.tasks.list(nodeID: f.node)
            #expect(tasks.count == workflow.steps.count && tasks.allSatisfy { $0.workflowID == created.id })
            #expect(Set(tasks.compactMap(\.stepIndex)) == Set(workflow.steps.indices))
            let window = try #require(workflow.maintenanceWindow)
            #expect(window.end != nil && window.end! >= window.start)

            let (again, secondOutcome) = try await Self.start(f)
            #expect(secondOutcome == .alreadyDone && again.id == created.id)
            #expect(try await f.tasks.list(nodeID: f.node).count == tasks.count, "no new task")
        }
    }

    @Test func aFailedStepStopsTheWorkflowAndResumeContinuesFromIt() async throws {
        try await Self.with { f in
            let (created, _) = try await Self.start(f)
            var workflow = try await f.advance(created.id)
            let migrate = try #require(created.steps.firstIndex { $0.kind == "migrateSQLite" })
            while workflow.currentStep < migrate { workflow = try await f.step(created.id) }
            workflow = try await f.step(created.id, ok: false)
            #expect(workflow.state == .failed && workflow.currentStep == migrate)
            #expect(
                workflow.error?.message.contains("step \(migrate + 1) (migrate /srv/app/db/repo.db) failed") == true)
            #expect(
                workflow.steps[migrate + 1].state == .pending && workflow.steps[migrate + 1].taskID == nil,
                "nothing after the failure")
            // The rollback undoes only what started: the stop (start the standalone service again, check health).
            #expect(
                workflow.rollbackPlan.map(\.name) == [
                    "stop repo-service.service", "start repo-service.service (standalone)",
                    "wait until standalone repo-service.service is healthy",
                ])
            // Advancing a failed workflow does nothing.
            let taskCount = try await f.tasks.list(nodeID: f.node).count
            _ = try await f.advance(created.id)
            #expect(try await f.tasks.list(nodeID: f.node).count == taskCount)

            // Running the same seed again resumes at the failed step with a new task.
            let (resumed, outcome) = try await Self.start(f)
            #expect(outcome == .resumed && resumed.id == created.id && resumed.state == .running)
            workflow = try await f.advance(created.id)
            #expect(workflow.steps[migrate].epoch == 2 && workflow.steps[migrate].state == .running)
            #expect(try await f.tasks.list(nodeID: f.node).count == taskCount + 1)
            while workflow.state == .running { workflow = try await f.step(created.id) }
            #expect(workflow.state == .succeeded)
        }
    }

    @Test func rollbackRunsTheCompensationsInOrderAndFreesTheNode() async throws {
        try await Self.with { f in
            let (created, _) = try await Self.start(f)
            var workflow = try await f.advance(created.id)
            // Run until the start in cluster mode, and fail it.
            while workflow.steps[workflow.currentStep].kind != "controlUnit"
                || workflow.steps[workflow.currentStep].spec["action"] != .string("restart")
            {
                workflow = try await f.step(created.id)
            }
            workflow = try await f.step(created.id, ok: false)
            #expect(workflow.state == .failed)
            // A different profile cannot start while this one is failed.
            var other = Self.exampleProfile
            other.service.healthTimeoutSeconds = 5
            await #expect(throws: MusterError.self) { _ = try await Self.start(f, profile: other) }

            workflow = try await f.store.rollback(id: created.id, now: Date(), actor: "test")
            #expect(workflow.state == .rollingBack)
            #expect(
                workflow.rollback?.map(\.name) == [
                    "stop repo-service.service", "restore rewrite paths", "restore /etc/repo-service/config.json",
                    "start repo-service.service (standalone)", "wait until standalone repo-service.service is healthy",
                ])
            workflow = try await f.advance(created.id)
            let firstUndo = try #require(workflow.rollback?[0].taskID)
            let task = try await f.tasks.show(id: firstUndo)
            #expect(task.stepIndex == WorkflowStore.rollbackStepBase && task.spec["action"] == .string("stop"))
            while workflow.state == .rollingBack { workflow = try await f.step(created.id) }
            #expect(workflow.state == .rolledBack)
            let restores = try await f.tasks.list(nodeID: f.node).filter { $0.spec["restore"] == .bool(true) }
            #expect(restores.count == 2)
            await #expect(throws: MusterError.self) {
                _ = try await f.store.rollback(id: created.id, now: Date(), actor: "test")
            }
            // Rolled back: the node is free for a new seed.
            let (fresh, outcome) = try await Self.start(f)
            #expect(outcome == .created && fresh.id != created.id)
        }
    }

    @Test func aWorkflowThatFailedBeforeChangingAnythingIsReplacedByANewProfile() async throws {
        try await Self.with { f in
            let (created, _) = try await Self.start(f)
            _ = try await f.advance(created.id)
            let failed = try await f.step(created.id, ok: false)  // the precheck
            #expect(failed.state == .failed && failed.rollbackPlan.isEmpty)
            var other = Self.exampleProfile
            other.service.healthTimeoutSeconds = 5
            let (fresh, outcome) = try await Self.start(f, profile: other)
            #expect(outcome == .created && fresh.id != created.id)
            #expect(try await f.store.show(id: created.id).state == .rolledBack)
        }
    }

    @Test func concurrentRunnersNeverCreateAStepTwice() async throws {
        try await Self.with { f in
            let (created, _) = try await Self.start(f)
            // Four runners (as four coordinators would) advance while the steps finish.
            for _ in 0..<3 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<4 {
                        group.addTask { _ = try await f.store.advance(id: created.id, now: Date()) }
                    }
                    try await group.waitForAll()
                }
                let workflow = try await f.store.show(id: created.id)
                let taskID = try #require(workflow.steps[workflow.currentStep].taskID)
                try await f.finish(taskID)
            }
            _ = try await f.store.advance(id: created.id, now: Date())
            let tasks = try await f.tasks.list(nodeID: f.node)
            #expect(tasks.count == 4, "\(tasks.map { "\($0.stepIndex ?? -1)" })")
            #expect(Set(tasks.compactMap(\.stepIndex)) == [0, 1, 2, 3])
        }
    }

    /// A coordinator restart: the first runner stops while a step's task runs; the task finishes with no runner
    /// alive; a new runner (as after the restart) records it and carries on, without a second task for the step.
    @Test func aNewRunnerCarriesOnWhereAStoppedOneLeftOff() async throws {
        try await Self.with { f in
            let (created, _) = try await Self.start(f)
            func runner() -> (WorkflowRunner, AsyncStream<UUID>) {
                let dispatched = AsyncStream<UUID>.makeStream()
                return (
                    WorkflowRunner(
                        store: f.store, configuration: .init(pollInterval: .milliseconds(100)),
                        dispatch: { dispatched.continuation.yield($0) }, logger: TestDatabase.logger),
                    dispatched.stream
                )
            }
            let (first, firstDispatched) = runner()
            let firstRun = Task { try await first.run() }
            var iterator = firstDispatched.makeAsyncIterator()
            _ = await iterator.next()
            firstRun.cancel()
            _ = try? await firstRun.value

            let step0 = try #require(try await f.store.show(id: created.id).steps[0].taskID)
            try await f.finish(step0)
            let (second, secondDispatched) = runner()
            let secondRun = Task { try await second.run() }
            defer { secondRun.cancel() }
            var secondIterator = secondDispatched.makeAsyncIterator()
            _ = await secondIterator.next()
            let workflow = try await f.store.show(id: created.id)
            #expect(workflow.currentStep == 1 && workflow.steps[0].state == .succeeded && workflow.steps[0].epoch == 1)
            #expect(try await f.tasks.list(nodeID: f.node).count == 2)
        }
    }

    @Test func theRunnerAdvancesOnItsOwnAndWakesOnRequest() async throws {
        try await Self.with { f in
            let dispatched = AsyncStream<UUID>.makeStream()
            let runner = WorkflowRunner(
                store: f.store, configuration: .init(pollInterval: .seconds(30)),
                dispatch: { dispatched.continuation.yield($0) }, logger: TestDatabase.logger)
            let (created, _) = try await Self.start(f)
            let running = Task { try await runner.run() }
            defer { running.cancel() }
            runner.wake()
            var iterator = dispatched.stream.makeAsyncIterator()
            #expect(await iterator.next() == f.node)
            let workflow = try await f.store.show(id: created.id)
            try await f.finish(try #require(workflow.steps[0].taskID))
            runner.wake()
            #expect(await iterator.next() == f.node)
            #expect(try await f.store.show(id: created.id).currentStep == 1)
        }
    }
}
