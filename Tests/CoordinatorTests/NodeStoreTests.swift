import Foundation
import Shared
import Synchronization
import Testing

@testable import Coordinator

@Suite("Nodes, heartbeats and the sweeper (real PostgreSQL)")
struct NodeStoreTests {
    static func join(_ nodes: NodeStore, _ tokens: TokenStore, hostnames: [String], now: Date) async throws
        -> [NodeRecord]
    {
        let (token, _) = try await tokens.create(
            ttl: .seconds(3600), usesAllowed: nil, labels: ["env": "test"], caPin: TestDatabase.pin, now: now,
            actor: "test")
        var out: [NodeRecord] = []
        for hostname in hostnames {
            out.append(
                try await nodes.redeemJoinToken(
                    tokenID: token.id, secret: token.secret, facts: TestDatabase.facts(hostname), now: now))
        }
        return out
    }

    @Test func sessionHeartbeatListShowForget() async throws {
        try await TestDatabase.with { database, name in
            let logger = TestDatabase.logger
            let nodes = NodeStore(database: database, heartbeats: HeartbeatBatcher(), logger: logger)
            let tokens = TokenStore(database: database, logger: logger)
            let t0 = Date()
            let node = try #require(try await Self.join(nodes, tokens, hostnames: ["alpha"], now: t0).first)
            #expect(try await nodes.admission(of: node.id) == .admitted)
            #expect(try await nodes.admission(of: UUID()) == .unknown)

            try await nodes.recordCertificate(
                nodeID: node.id, serial: "01ab", notAfter: t0.addingTimeInterval(86400), pem: "PEM")
            try await nodes.sessionOpened(nodeID: node.id, at: t0, address: "10.77.0.11:40000")
            var shown = try await nodes.show(id: node.id)
            #expect(shown.state == .ready)
            #expect(shown.address == "10.77.0.11:40000")
            #expect(shown.hostname == "alpha")
            #expect(shown.labels == ["env": "test"])

            let t1 = t0.addingTimeInterval(5)
            nodes.enqueueHeartbeat(nodeID: node.id, report: TestDatabase.report(clock: t1, version: "0.1.1"), receivedAt: t1)
            #expect(try await nodes.heartbeats.flush(to: database, logger: logger) == 1)
            shown = try await nodes.show(id: node.id)
            #expect(shown.lastReport?.agentVersion == "0.1.1")
            #expect(shown.agentVersion == "0.1.1")
            #expect(abs((shown.lastSeen ?? .distantPast).timeIntervalSince(t1)) < 0.001)

            let forgotten = try await nodes.forget(id: node.id, now: t1, actor: "admin")
            #expect(forgotten.state == .forgotten)
            #expect(try await nodes.admission(of: node.id) == .forgotten)
            #expect(try await nodes.revokedCertificateSerials(nodeID: node.id) == ["01ab"])
            #expect(try await nodes.list().isEmpty)
            #expect(try await nodes.list(includeForgotten: true).count == 1)
            await #expect { try await nodes.sessionOpened(nodeID: node.id, at: t1, address: nil) } throws: {
                ($0 as? MusterError)?.code == .nodeForgotten
            }
            await #expect { _ = try await nodes.forget(id: node.id, now: t1, actor: "admin") } throws: {
                ($0 as? MusterError)?.code == .conflict
            }
            await #expect { _ = try await nodes.show(id: UUID()) } throws: { ($0 as? MusterError)?.code == .notFound }
            // A heartbeat of a forgotten node does not bring it back.
            nodes.enqueueHeartbeat(nodeID: node.id, report: TestDatabase.report(), receivedAt: t1.addingTimeInterval(1))
            try await nodes.heartbeats.flush(to: database, logger: logger)
            #expect(try TestDatabase.psql(name, "SELECT state FROM nodes") == "forgotten")
            let audit = try await AuditLog.recent(on: database, logger: logger)
            #expect(audit.first?.action == "node.forget")
            #expect(audit.first?.details["revokedCertificates"] == "01ab")
        }
    }

    @Test func heartbeatsAreBatchedIntoOneStatementPerFlush() async throws {
        try await TestDatabase.with { database, name in
            let logger = TestDatabase.logger
            let batcher = HeartbeatBatcher()
            let nodes = NodeStore(database: database, heartbeats: batcher, logger: logger)
            let tokens = TokenStore(database: database, logger: logger)
            let t0 = Date()
            let joined = try await Self.join(nodes, tokens, hostnames: (0..<200).map { "n\($0)" }, now: t0)
            // Three heartbeats per node queued; only the newest per node is kept and written.
            for round in 1...3 {
                for node in joined {
                    let at = t0.addingTimeInterval(Double(round))
                    nodes.enqueueHeartbeat(nodeID: node.id, report: TestDatabase.report(clock: at), receivedAt: at)
                }
            }
            // An older heartbeat arriving late does not replace a newer one.
            nodes.enqueueHeartbeat(nodeID: joined[0].id, report: TestDatabase.report(), receivedAt: t0)
            #expect(batcher.statistics.pending == 200)
            #expect(try await batcher.flush(to: database, logger: logger) == 200)
            let stats = batcher.statistics
            #expect(stats.flushes == 1)
            #expect(stats.rowsWritten == 200)
            #expect(stats.pending == 0)
            let newest = try TestDatabase.psql(
                name,
                "SELECT count(*) FROM nodes WHERE state = 'ready' AND last_seen > '\(MusterJSON.isoFormatter.format(t0.addingTimeInterval(2.5)))'::timestamptz")
            #expect(newest == "200")
            // Nothing queued: a flush does not touch the database.
            #expect(try await batcher.flush(to: database, logger: logger) == 0)
            #expect(batcher.statistics.flushes == 1)
        }
    }

    @Test func largeBacklogIsWrittenInBoundedStatements() async throws {
        try await TestDatabase.with { database, _ in
            let logger = TestDatabase.logger
            let batcher = HeartbeatBatcher(maximumBatch: 50)
            let nodes = NodeStore(database: database, heartbeats: batcher, logger: logger)
            let tokens = TokenStore(database: database, logger: logger)
            let joined = try await Self.join(nodes, tokens, hostnames: (0..<120).map { "n\($0)" }, now: Date())
            for node in joined { nodes.enqueueHeartbeat(nodeID: node.id, report: TestDatabase.report(), receivedAt: Date()) }
            #expect(try await batcher.flush(to: database, logger: logger) == 100)
            #expect(batcher.statistics.flushes == 2)
            #expect(batcher.statistics.pending == 20)
        }
    }

    @Test func sweeperMarksSilentNodesUnreachableAfterTheFailoverGrace() async throws {
        try await TestDatabase.with { database, _ in
            let logger = TestDatabase.logger
            let batcher = HeartbeatBatcher()
            let nodes = NodeStore(database: database, heartbeats: batcher, logger: logger)
            let tokens = TokenStore(database: database, logger: logger)
            let start = Date()
            let joined = try await Self.join(nodes, tokens, hostnames: ["a", "b"], now: start)
            for node in joined { try await nodes.sessionOpened(nodeID: node.id, at: start, address: nil) }

            let clock = Mutex(start)
            let policy = SweepPolicy(
                heartbeatTTL: .seconds(10), grace: .seconds(5), failoverGrace: .seconds(60), startedAt: start)
            let sweeper = NodeSweeper(
                database: database, batcher: batcher, policy: policy, interval: .seconds(1),
                now: { clock.withLock { $0 } }, logger: logger)

            // Inside the failover grace nobody is marked, however old the heartbeats.
            clock.withLock { $0 = start.addingTimeInterval(59) }
            #expect(policy.action(at: start.addingTimeInterval(59)) == .wait(until: start.addingTimeInterval(60)))
            #expect(try await sweeper.sweep().isEmpty)

            // After it, "a" keeps heartbeating (queued, flushed by the sweep itself) and "b" is silent.
            let t = start.addingTimeInterval(61)
            clock.withLock { $0 = t }
            nodes.enqueueHeartbeat(nodeID: joined[0].id, report: TestDatabase.report(), receivedAt: t.addingTimeInterval(-1))
            #expect(try await sweeper.sweep() == [joined[1].id])
            #expect(try await nodes.show(id: joined[0].id).state == .ready)
            #expect(try await nodes.show(id: joined[1].id).state == .unreachable)
            // Already unreachable: not marked again.
            #expect(try await sweeper.sweep().isEmpty)

            // "b" reconnects: ready again. A heartbeat alone also heals it.
            try await nodes.sessionOpened(nodeID: joined[1].id, at: t, address: nil)
            #expect(try await nodes.show(id: joined[1].id).state == .ready)
            clock.withLock { $0 = t.addingTimeInterval(16) }
            #expect(Set(try await sweeper.sweep()) == Set(joined.map(\.id)))
            nodes.enqueueHeartbeat(nodeID: joined[0].id, report: TestDatabase.report(), receivedAt: t.addingTimeInterval(17))
            try await batcher.flush(to: database, logger: logger)
            #expect(try await nodes.show(id: joined[0].id).state == .ready)
        }
    }

    @Test func sweepPolicyBoundaries() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        let policy = SweepPolicy(heartbeatTTL: .seconds(10), grace: .seconds(20), failoverGrace: .zero, startedAt: start)
        #expect(policy.action(at: start) == .markUnreachable(seenBefore: start.addingTimeInterval(-30)))
        let later = start.addingTimeInterval(100)
        #expect(policy.action(at: later) == .markUnreachable(seenBefore: later.addingTimeInterval(-30)))
    }
}
