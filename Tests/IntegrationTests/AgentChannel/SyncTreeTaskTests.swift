import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Agent
@testable import Coordinator

/// `syncTree` end to end in one process: the task is created in the store, delivered over the real mutual-TLS
/// session to the real task runner, which runs the real ``SyncEngine`` (real rsync); progress and the result
/// arrive at the coordinator and are stored.
@Suite("syncTree tasks (real rsync, TLS, PostgreSQL)")
struct SyncTreeTaskTests {
    static func makeTree(_ root: String, files: Int) throws {
        let fm = FileManager.default
        for i in 0..<files {
            let dir = "\(root)/d\(i % 7)"
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data(repeating: UInt8(i % 251), count: 1000 + i * 37).write(to: URL(fileURLWithPath: "\(dir)/f\(i)"))
        }
        // One bigger file so the copy has more than one progress record.
        try Data(repeating: 7, count: 8 << 20).write(to: URL(fileURLWithPath: "\(root)/big.bin"))
    }

    @Test func syncTreeCopiesReportsProgressAndARerunCopiesNothing() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            let source = "\(fx.directory)/src"
            let destination = "\(fx.directory)/dst"
            try Self.makeTree(source, files: 200)
            try await TaskTests.withAgent(fx, stateDirectory: stateDirectory) { _, _ in
                let spec: JSONValue = .object([
                    "source": .string(source), "destination": .string(destination), "verify": .string("full"),
                ])
                func run() async throws -> TaskRecord {
                    let created = try await fx.tasks.create(
                        nodeID: identity.nodeID, kind: .syncTree, spec: spec, maxAttempts: 1, now: fx.clock.now,
                        actor: "test")
                    await fx.dispatcher.dispatch(nodeID: identity.nodeID)
                    return try await TaskTests.waitForState(fx, created.id, [.succeeded, .failed], "the sync finished")
                }
                let first = try await run()
                #expect(first.state == .succeeded, "\(first.error?.message ?? "")")
                // The last progress record reached the coordinator: the whole tree, 100 %.
                guard case .object(let progress)? = first.progress else {
                    Issue.record("no progress stored: \(String(describing: first.progress))")
                    return
                }
                #expect(progress["phase"] == .string("verifying"))
                #expect(progress["percent"] == .number(100))
                #expect(progress["filesTotal"] == .number(Double(200 + 7 + 1 + 1)))
                #expect(
                    progress["bytes"].map { if case .number(let b) = $0 { b >= Double(8 << 20) } else { false } }
                        == true)
                let report = try #require(first.result)
                guard case .object(let fields) = report, case .object(let stats)? = fields["stats"],
                    case .object(let verification)? = fields["verification"]
                else {
                    Issue.record("unexpected result \(report.jsonText)")
                    return
                }
                #expect(stats["transferredFiles"] == .number(201))
                #expect(verification["filesHashed"] == .number(201))
                #expect(
                    FileManager.default.contentsEqual(atPath: "\(source)/big.bin", andPath: "\(destination)/big.bin"))

                // Resumable / idempotent: a second run transfers nothing.
                let second = try await run()
                #expect(second.state == .succeeded)
                if case .object(let f)? = second.result, case .object(let s)? = f["stats"] {
                    #expect(s["transferredFiles"] == .number(0))
                } else {
                    Issue.record("no stats in the second result")
                }
            }
        }
    }

    @Test func badPathsAndAMissingSourceFailWithPreciseErrors() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            try await TaskTests.withAgent(fx, stateDirectory: stateDirectory) { _, _ in
                let cases: [(JSONValue, String, String)] = [
                    (
                        .object(["source": .string("relative"), "destination": .string("/tmp/x")]), "USAGE",
                        "not an absolute path"
                    ),
                    (
                        .object(["source": .string("/nonexistent-src"), "destination": .string("\(fx.directory)/d")]),
                        "INVALID_INPUT", "is not a directory"
                    ),
                    (.object(["source": .string("/tmp")]), "INVALID_INPUT", "needs a source and a destination"),
                    (.object(["source": .number(5)]), "INVALID_INPUT", "syncTree spec must look like"),
                    (
                        .object([
                            "serve": .object([
                                "path": .string("/tmp"), "address": .string("127.0.0.1"), "port": .number(0),
                                "module": .string("m"), "secret": .string("short"),
                            ])
                        ]), "INVALID_INPUT", "the serve spec needs"
                    ),
                ]
                for (spec, code, message) in cases {
                    let created = try await fx.tasks.create(
                        nodeID: identity.nodeID, kind: .syncTree, spec: spec, maxAttempts: 1, now: fx.clock.now,
                        actor: "test")
                    await fx.dispatcher.dispatch(nodeID: identity.nodeID)
                    let done = try await TaskTests.waitForState(
                        fx, created.id, [.succeeded, .failed], "the task finished")
                    #expect(done.state == .failed)
                    #expect(done.error?.code == code, "\(String(describing: done.error))")
                    #expect(done.error?.message.contains(message) == true, "\(String(describing: done.error))")
                }
            }
        }
    }

    @Test func heartbeatsCarryTheVolumesTheAgentFindsOnDisk() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            // A volume unit the agent wrote earlier, for a path that is not mounted; no service manager here.
            let units = "\(fx.directory)/units"
            try FileManager.default.createDirectory(atPath: units, withIntermediateDirectories: true)
            let spec = VolumeSpec(
                name: "golden", type: .nfs4, server: "127.0.0.1", source: "/export", mountPath: "\(fx.directory)/mnt")
            let (name, file) = try MountUnit.make(spec)
            try UnitWriter(directory: units).write(file, as: name)
            let volumes = VolumeManager(
                configuration: .init(
                    unitDirectory: units,
                    connect: { throw MusterError(.connectionFailed, "no service manager in this test") }),
                logger: fx.logger)
            let session = CoordinatorSession(
                configuration: .init(
                    stateDirectory: stateDirectory, backoff: Backoff(base: .milliseconds(50), cap: .milliseconds(200))),
                health: HealthCollector(stateDirectory: stateDirectory, volumes: { await volumes.statuses() }),
                logger: fx.logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await session.run() }
                defer { group.cancelAll() }
                try await ChannelFixture.eventually("heartbeats flow") { session.status.heartbeatsSent >= 2 }
                try await fx.nodes.heartbeats.flush(to: fx.database, logger: fx.logger)
                let reported = try #require(try await fx.nodes.show(id: identity.nodeID).lastReport?.volumes)
                #expect(reported.count == 1)
                let status = try #require(reported.first)
                #expect(status.name == "golden" && status.mountPath == spec.mountPath)
                #expect(!status.mounted && !status.writable && status.unitState == nil)
                #expect(status.problem?.contains("not mounted") == true, "\(status)")
            }
        }
    }
}
