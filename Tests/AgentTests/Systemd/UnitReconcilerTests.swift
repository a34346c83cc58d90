import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// attach / reattach / detach of one module's units against a real user manager.
@Suite("unit reconciler", .serialized, .requiresSystemd)
struct UnitReconcilerTests {
    static func unit(_ module: String, _ service: String, _ argv: [String], log: String) throws -> (UnitName, UnitFile)
    {
        let name = try UnitName.service(module: module, service: service)
        let file = UnitFile(
            owner: UnitReconciler.owner(module: module, service: service),
            unit: .init(description: "\(module) \(service)"),
            service: .init(
                execStart: argv, restart: .onFailure, sandbox: .default, standardOutput: .append(log),
                standardError: .append(log)),
            scope: .user)
        return (name, file)
    }

    @Test("attach starts both, reattach restarts only the changed one, detach removes only ours, twice is a no-op")
    func attachReattachDetach() async throws {
        try await UserManager.with { manager in
            let systemd = try await SystemdManager.connect(manager.busAddress)
            let writer = UnitWriter(directory: manager.unitDirectory)
            let reconciler = UnitReconciler(systemd: systemd, writer: writer)
            let log = "\(manager.scratch)/web.log"
            // Another module's unit and a hand-written one must survive everything below.
            let (otherName, otherFile) = try Self.unit("other", "keep", ["/bin/sleep", "300"], log: log)
            _ = try await UnitReconciler(systemd: systemd, writer: writer).apply(
                module: "other", desired: [(otherName, otherFile)])
            let handWritten = "\(manager.unitDirectory)/web-notours.service"
            try "[Service]\nExecStart=/bin/sleep 300\n".write(toFile: handWritten, atomically: true, encoding: .utf8)

            let v1 = [
                try Self.unit("web", "api", ["/bin/sleep", "301"], log: log),
                try Self.unit("web", "worker", ["/bin/sleep", "302"], log: log),
            ]
            let attached = try await reconciler.apply(module: "web", desired: v1)
            #expect(attached.actions.values.allSatisfy { $0 == .started })
            #expect(attached.failures.isEmpty)
            let before = try await systemd.states(of: v1.map(\.0))
            #expect(before.allSatisfy { $0.activeState == "active" && $0.mainPID > 0 })

            // v2 changes only the worker's definition.
            let v2 = [v1[0], try Self.unit("web", "worker", ["/bin/sleep", "303"], log: log)]
            let reattached = try await reconciler.apply(module: "web", desired: v2)
            #expect(reattached.actions[v1[0].0] == .unchanged)
            #expect(reattached.actions[v1[1].0] == .restarted)
            let after = try await systemd.states(of: v2.map(\.0))
            #expect(after[0].mainPID == before[0].mainPID, "the unchanged service kept running")
            #expect(after[1].mainPID != before[1].mainPID, "the changed service was restarted")
            #expect(after.allSatisfy { $0.activeState == "active" })

            // v3 drops the worker: stopped and removed.
            let reduced = try await reconciler.apply(module: "web", desired: [v1[0]])
            #expect(reduced.actions[v1[1].0] == .removed)
            #expect(try reconciler.units(of: "web") == [v1[0].0])

            let detached = try await reconciler.detach(module: "web")
            #expect(detached == [v1[0].0])
            #expect(try reconciler.units(of: "web").isEmpty)
            let gone = try await systemd.state(of: v1[0].0)
            #expect(gone.loadState == "not-found")
            #expect(try await reconciler.detach(module: "web").isEmpty)

            #expect(FileManager.default.fileExists(atPath: handWritten))
            #expect(try await systemd.state(of: otherName).activeState == "active")
        }
    }

    @Test("a conflicting unit is refused before anything running is touched")
    func conflictLeavesRunningUnits() async throws {
        try await UserManager.with { manager in
            let systemd = try await SystemdManager.connect(manager.busAddress)
            let writer = UnitWriter(directory: manager.unitDirectory)
            let reconciler = UnitReconciler(systemd: systemd, writer: writer)
            let log = "\(manager.scratch)/web.log"
            let api = try Self.unit("web", "api", ["/bin/sleep", "301"], log: log)
            _ = try await reconciler.apply(module: "web", desired: [api])
            let pid = try await systemd.state(of: api.0).mainPID
            let foreign = try UnitName.service(module: "web", service: "db")
            try "[Service]\nExecStart=/bin/true\n".write(
                toFile: writer.path(of: foreign), atomically: true, encoding: .utf8)
            let db = try Self.unit("web", "db", ["/bin/sleep", "302"], log: log)
            let changedAPI = try Self.unit("web", "api", ["/bin/sleep", "309"], log: log)
            let error = await #expect(throws: MusterError.self) {
                try await reconciler.apply(module: "web", desired: [changedAPI, db])
            }
            #expect(error?.code == .conflict)
            #expect(try await systemd.state(of: api.0).mainPID == pid)
            // Nothing was written: the api unit still has its old definition.
            #expect(try String(contentsOfFile: writer.path(of: api.0), encoding: .utf8) == (try api.1.render()))
        }
    }
}
