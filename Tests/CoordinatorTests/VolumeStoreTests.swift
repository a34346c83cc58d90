import Foundation
import Shared
import TestSupport
import Testing

@testable import Coordinator

@Suite("VolumeStore on real PostgreSQL")
struct VolumeStoreTests {
    static func stores(_ database: Database) -> (VolumeStore, TaskStore) {
        let tasks = TaskStore(database: database, logger: TestDatabase.logger)
        return (VolumeStore(database: database, tasks: tasks, logger: TestDatabase.logger), tasks)
    }

    static let golden = VolumeSpec(
        name: "golden", type: .nfs4, server: "10.77.0.1", source: "/export/golden", options: ["timeo=300"],
        mountPath: "/mnt/muster/golden")

    @Test func createRefusesDuplicatesAndBadSpecs() async throws {
        try await TestDatabase.with { database, _ in
            let (volumes, _) = Self.stores(database)
            let created = try await volumes.create(Self.golden, now: Date(), actor: "test")
            #expect(created.spec == Self.golden)
            #expect(created.attachments.isEmpty)
            await #expect {
                try await volumes.create(Self.golden, now: Date(), actor: "test")
            } throws: { ($0 as? MusterError)?.message.contains("exists already") == true }
            var samePath = Self.golden
            samePath.name = "other"
            await #expect {
                try await volumes.create(samePath, now: Date(), actor: "test")
            } throws: { ($0 as? MusterError)?.message.contains("already uses the mount path") == true }
            var relative = Self.golden
            relative.name = "rel"
            relative.mountPath = "mnt/x"
            await #expect {
                try await volumes.create(relative, now: Date(), actor: "test")
            } throws: { ($0 as? MusterError)?.code == .invalidInput }
            #expect(try await volumes.list().map(\.name) == ["golden"])
        }
    }

    @Test func attachCreatesOneTaskPerNodeAndIsIdempotent() async throws {
        try await TestDatabase.with { database, name in
            let (volumes, tasks) = Self.stores(database)
            let a = try await TaskStoreTests.node(database)
            let b = try await TaskStoreTests.node(database)
            _ = try await volumes.create(Self.golden, now: Date(), actor: "test")

            let first = try await volumes.attach(name: "golden", nodes: [a], now: Date(), actor: "test")
            #expect(first.map(\.outcome) == ["created"])
            let task = try #require(first.first?.task)
            #expect(task.kind == "mountVolume")
            #expect(try task.spec.decode(VolumeSpec.self) == Self.golden)

            // While that task is pending, attaching again adds nothing.
            let again = try await volumes.attach(name: "golden", nodes: [a], now: Date(), actor: "test")
            #expect(again.map(\.outcome) == ["inProgress"])
            #expect(again.first?.task?.id == task.id)
            try TestDatabase.psql(name, "UPDATE tasks SET state = 'succeeded' WHERE id = '\(task.id)'")
            #expect(
                try await volumes.attach(name: "golden", nodes: [a], now: Date(), actor: "test").map(\.outcome) == [
                    "alreadyDone"
                ])
            // A failed attach is retried by attaching again.
            try TestDatabase.psql(name, "UPDATE tasks SET state = 'failed' WHERE id = '\(task.id)'")
            let retried = try await volumes.attach(name: "golden", nodes: [a], now: Date(), actor: "test")
            #expect(retried.map(\.outcome) == ["created"])
            #expect(retried.first?.task?.id != task.id)

            // --all: every node; a's task (pending) is not duplicated.
            let all = try await volumes.attach(name: "golden", nodes: nil, now: Date(), actor: "test")
            #expect(Set(all.map(\.node)) == [a, b])
            #expect(all.first { $0.node == a }?.outcome == "inProgress")
            #expect(all.first { $0.node == b }?.outcome == "created")
            #expect(try await tasks.list().filter { $0.kind == "mountVolume" }.count == 3)

            await #expect {
                try await volumes.attach(name: "nope", nodes: [a], now: Date(), actor: "test")
            } throws: { ($0 as? MusterError)?.code == .notFound }
        }
    }

    @Test func detachIsANoOpWhereNotAttachedAndShowsTheReportedStatus() async throws {
        try await TestDatabase.with { database, name in
            let (volumes, _) = Self.stores(database)
            let a = try await TaskStoreTests.node(database)
            let b = try await TaskStoreTests.node(database)
            _ = try await volumes.create(Self.golden, now: Date(), actor: "test")
            #expect(
                try await volumes.detach(name: "golden", nodes: [a], now: Date(), actor: "test").map(\.outcome) == [
                    "notAttached"
                ])
            #expect(try await volumes.detach(name: "golden", nodes: nil, now: Date(), actor: "test").isEmpty)

            _ = try await volumes.attach(name: "golden", nodes: [a], now: Date(), actor: "test")
            // The node's last health report mentions the volume.
            var report = TestDatabase.report()
            report.volumes = [
                VolumeStatus(
                    name: "golden", mountPath: "/mnt/muster/golden", unitState: "active", mounted: true,
                    writable: false, totalBytes: 100, freeBytes: 40, problem: "NFS server 10.77.0.1 unreachable")
            ]
            let json = try MusterJSON.string(report).replacingOccurrences(of: "'", with: "''")
            try TestDatabase.psql(name, "UPDATE nodes SET last_report = '\(json)'::jsonb WHERE id = '\(a)'")
            let listed = try #require(try await volumes.list().first)
            #expect(listed.attachments.count == 1)
            #expect(listed.attachments.first?.status?.writable == false)
            #expect(listed.attachments.first?.status?.problem?.contains("unreachable") == true)
            #expect(listed.attachments.first?.taskState == .pending)

            let detached = try await volumes.detach(name: "golden", nodes: nil, now: Date(), actor: "test")
            #expect(detached.map(\.node) == [a])
            #expect(detached.first?.task?.kind == "unmountVolume")
            #expect(
                try detached.first?.task?.spec.decode(UnmountVolumeSpec.self)
                    == UnmountVolumeSpec(name: "golden", mountPath: "/mnt/muster/golden"))
            #expect(try await volumes.show(name: "golden").attachments.first?.desired == "detached")
            #expect(
                try await volumes.detach(name: "golden", nodes: [a, b], now: Date(), actor: "test").map(\.outcome) == [
                    "notAttached", "notAttached",
                ])
        }
    }
}
