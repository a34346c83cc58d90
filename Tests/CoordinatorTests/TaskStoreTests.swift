import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Coordinator

@Suite("TaskStore on real PostgreSQL")
struct TaskStoreTests {
    static func node(_ database: Database) async throws -> UUID {
        let tokens = TokenStore(database: database, logger: TestDatabase.logger)
        let (token, _) = try await tokens.create(
            ttl: .seconds(3600), usesAllowed: nil, labels: [:], caPin: TestDatabase.pin, now: Date(), actor: "test")
        let nodes = NodeStore(database: database, heartbeats: HeartbeatBatcher(), logger: TestDatabase.logger)
        return try await nodes.redeemJoinToken(
            tokenID: token.id, secret: token.secret, facts: TestDatabase.facts(), now: Date()
        ).id
    }

    @Test func concurrentClaimersNeverAssignATaskTwice() async throws {
        try await TestDatabase.with { database, _ in
            let store = TaskStore(database: database, logger: TestDatabase.logger)
            let node = try await Self.node(database)
            let now = Date()
            var created = Set<UUID>()
            for _ in 0..<60 {
                created.insert(
                    try await store.create(nodeID: node, kind: .checkHealth, now: now, actor: "test").id)
            }
            // Four claimers (as four coordinators would) race in small batches until nothing is left.
            let claims = try await withThrowingTaskGroup(of: [UUID].self) { group in
                for claimer in 0..<4 {
                    group.addTask {
                        var mine: [UUID] = []
                        while true {
                            let batch = try await store.claim(
                                nodeID: node, owner: "coordinator-\(claimer)/1", limit: 3, now: now)
                            if batch.isEmpty { break }
                            #expect(batch.allSatisfy { $0.state == .assigned && $0.attempts == 1 })
                            mine += batch.map(\.id)
                        }
                        return mine
                    }
                }
                var all: [[UUID]] = []
                for try await claim in group { all.append(claim) }
                return all
            }
            let flat = claims.flatMap { $0 }
            #expect(flat.count == created.count)
            #expect(Set(flat) == created)
            let stored = try await store.list(nodeID: node)
            #expect(stored.allSatisfy { $0.state == .assigned && $0.attempts == 1 })
        }
    }

    @Test func leaseExpiryRetriesWithBackoffThenFails() async throws {
        try await TestDatabase.with { database, _ in
            let policy = TaskRetryPolicy(
                leaseDuration: .seconds(10), backoffBase: .seconds(5), backoffCap: .seconds(60))
            let store = TaskStore(database: database, policy: policy, logger: TestDatabase.logger)
            let node = try await Self.node(database)
            // Whole seconds: timestamptz keeps microseconds, so sums of sub-microsecond Dates may round apart.
            let t0 = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            let task = try await store.create(nodeID: node, kind: .checkHealth, maxAttempts: 2, now: t0, actor: "test")

            #expect(try await store.claim(nodeID: node, owner: "a/1", now: t0).map(\.id) == [task.id])
            #expect(try await store.accepted(taskID: task.id, nodeID: node, attempt: 1, now: t0) == .update)
            #expect(try await store.renewLeases(owners: ["a/1"], now: t0.addingTimeInterval(5)) == 1)
            #expect(try await store.expireLeases(now: t0.addingTimeInterval(14)).isEmpty)
            let expired = try await store.expireLeases(now: t0.addingTimeInterval(15))
            #expect(expired.map(\.taskID) == [task.id])
            let retried = try await store.show(id: task.id)
            #expect(retried.state == .pending)
            #expect(retried.leaseOwner == nil)
            // The backoff holds it back.
            #expect(try await store.claim(nodeID: node, owner: "b/1", now: t0.addingTimeInterval(19)).isEmpty)
            #expect(try await store.claim(nodeID: node, owner: "b/1", now: t0.addingTimeInterval(20)).count == 1)
            let gaveUp = try await store.expireLeases(now: t0.addingTimeInterval(31))
            #expect(gaveUp.map(\.taskID) == [task.id])
            let failed = try await store.show(id: task.id)
            #expect(failed.state == .failed)
            #expect(failed.attempts == 2)
            #expect(failed.error?.code == MusterError.Code.timeout.wireName)
            #expect(failed.finishedAt != nil)
        }
    }

    @Test func resultsAreRecordedOnceAndOnlyForTheNodesOwnTasks() async throws {
        try await TestDatabase.with { database, _ in
            let store = TaskStore(database: database, logger: TestDatabase.logger)
            let node = try await Self.node(database)
            let other = try await Self.node(database)
            let now = Date()
            let task = try await store.create(
                nodeID: node, kind: .checkHealth, spec: .object(["paths": .array([.string("/")])]), now: now,
                actor: "test")
            _ = try await store.claim(nodeID: node, owner: "a/1", now: now)
            let result = TaskResult(
                taskID: task.id, attempt: 1, outcome: .succeeded, result: .object(["ok": .bool(true)]), finishedAt: now)
            // Another node cannot report it.
            await #expect { try await store.result(result, nodeID: other, now: now) } throws: {
                ($0 as? MusterError)?.code == .notFound
            }
            #expect(try await store.result(result, nodeID: node, now: now) == .finish(.succeeded))
            #expect(try await store.result(result, nodeID: node, now: now) == .duplicateResult)
            let shown = try await store.show(id: task.id)
            #expect(shown.state == .succeeded)
            #expect(shown.result == .object(["ok": .bool(true)]))
            #expect(shown.spec == .object(["paths": .array([.string("/")])]))
            #expect(try await store.list(state: .succeeded).map(\.id) == [task.id])
            #expect(try await store.list(nodeID: other).isEmpty)
            await #expect { _ = try await store.cancel(id: task.id, now: now, actor: "test") } throws: {
                ($0 as? MusterError)?.code == .conflict
            }
        }
    }

    @Test func tasksNeedAnExistingNode() async throws {
        try await TestDatabase.with { database, _ in
            let store = TaskStore(database: database, logger: TestDatabase.logger)
            await #expect {
                _ = try await store.create(nodeID: UUID(), kind: .checkHealth, now: Date(), actor: "test")
            } throws: { ($0 as? MusterError)?.code == .notFound }
        }
    }
}
