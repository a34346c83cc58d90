import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// Against a real `systemd --user` manager booted per test (``UserManager``), spoken to over its D-Bus session bus
/// by the explicit address (the test process environment is never changed).
@Suite("systemd manager over D-Bus", .serialized, .requiresSystemd)
struct SystemdManagerTests {
    struct Node {
        let manager: UserManager
        let systemd: SystemdManager
        let writer: UnitWriter
        var scratch: String { manager.scratch }
    }

    static func withNode(_ body: (Node) async throws -> Void) async throws {
        try await UserManager.with { manager in
            let systemd = try await SystemdManager.connect(manager.busAddress)
            try await body(
                Node(manager: manager, systemd: systemd, writer: UnitWriter(directory: manager.unitDirectory)))
        }
    }

    static func service(
        _ argv: [String], type: UnitFile.ServiceType = .simple, restart: UnitFile.RestartPolicy = .no,
        sandbox: SandboxProfile = .trusted, log: String, readWritePaths: [String] = [],
        environment: [UnitFile.EnvironmentVariable] = [], owner: String = "web/api"
    ) -> UnitFile {
        UnitFile(
            owner: owner, unit: .init(description: "test service", startLimitInterval: .zero),
            service: .init(
                type: type, execStart: argv, restart: restart, restartSec: .milliseconds(50),
                environment: environment, readWritePaths: readWritePaths, sandbox: sandbox,
                standardOutput: .append(log), standardError: .append(log)),
            scope: .user)
    }

    /// Polls until `condition` holds for the unit's state (no wall-clock assertion: a generous deadline only).
    static func waitFor(
        _ systemd: SystemdManager, _ unit: UnitName, _ what: String, _ condition: (UnitState) -> Bool
    ) async throws -> UnitState {
        for _ in 0..<1000 {
            let state = try await systemd.state(of: unit)
            if condition(state) { return state }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw UserManagerError("unit \(unit) never reached: \(what)")
    }

    @Test("write, reload, start, read state over D-Bus, list, stop, remove")
    func lifecycle() async throws {
        try await Self.withNode { node in
            let unit = try UnitName.service(module: "web", service: "sleeper")
            let log = "\(node.scratch)/sleeper.log"
            #expect(try node.writer.write(Self.service(["/bin/sleep", "300"], log: log), as: unit) == .created)
            try await node.systemd.daemonReload()
            let job = try await node.systemd.start(unit)
            #expect(job.hasPrefix("/org/freedesktop/systemd1/job/"))
            let outcome = try await node.systemd.waitUntilSettled(unit, job: job)
            guard case .active(let state) = outcome else {
                Issue.record("expected active, got \(outcome)")
                return
            }
            #expect(state.activeState == "active")
            #expect(state.subState == "running")
            #expect(state.loadState == "loaded")
            #expect(state.result == "success")
            #expect(state.nRestarts == 0)
            #expect(state.fragmentPath == node.writer.path(of: unit))
            #expect(state.mainPID > 0)
            #expect(kill(pid_t(state.mainPID), 0) == 0, "MainPID \(state.mainPID) is a live process")
            let comm = try String(contentsOfFile: "/proc/\(state.mainPID)/comm", encoding: .utf8)
            #expect(comm.trimmingSuffixNewline() == "sleep")

            let listed = try await node.systemd.listUnits(matching: ["muster-*"])
            #expect(listed.contains { $0.name == unit.rawValue && $0.activeState == "active" })

            try await node.systemd.stop(unit)
            let stopped = try await Self.waitFor(node.systemd, unit, "inactive") { $0.activeState == "inactive" }
            #expect(stopped.mainPID == 0)

            #expect(try node.writer.remove(unit, owner: "web/api"))
            try await node.systemd.daemonReload()
            let gone = try await node.systemd.state(of: unit)
            #expect(gone.loadState == "not-found")
        }
    }

    @Test("a service that exits immediately fails with Result=exit-code and its last log lines")
    func failingService() async throws {
        try await Self.withNode { node in
            let unit = try UnitName.service(module: "web", service: "broken")
            let log = "\(node.scratch)/broken.log"
            let file = Self.service(
                ["/bin/sh", "-c", "echo first line; echo 'second line' >&2; exit 3"], log: log)
            try node.writer.write(file, as: unit)
            try await node.systemd.daemonReload()
            let job = try await node.systemd.start(unit)
            let outcome = try await node.systemd.waitUntilSettled(unit, job: job, log: .file(log))
            guard case .failed(let state, let tail) = outcome else {
                Issue.record("expected failed, got \(outcome)")
                return
            }
            #expect(state.activeState == "failed")
            #expect(state.result == "exit-code")
            #expect(state.execMainStatus == 3)
            #expect(tail.suffix(2) == ["first line", "second line"])
            let message = try #require(outcome.failureMessage)
            #expect(message.contains("Result=exit-code"))
            #expect(message.contains("second line"))
        }
    }

    @Test("a crashing service with Restart=always is reported failed and NRestarts counts its restarts")
    func restartingService() async throws {
        try await Self.withNode { node in
            let unit = try UnitName.service(module: "web", service: "crashloop")
            let log = "\(node.scratch)/crash.log"
            try node.writer.write(
                Self.service(["/bin/sh", "-c", "echo crash; exit 1"], restart: .always, log: log), as: unit)
            try await node.systemd.daemonReload()
            let job = try await node.systemd.start(unit)
            let outcome = try await node.systemd.waitUntilSettled(unit, job: job, log: .file(log))
            guard case .failed(let state, let tail) = outcome else {
                Issue.record("expected failed, got \(outcome)")
                return
            }
            #expect(state.result == "exit-code")
            #expect(tail.last == "crash")
            let restarted = try await Self.waitFor(node.systemd, unit, "NRestarts >= 2") { $0.nRestarts >= 2 }
            #expect(restarted.nRestarts >= 2)
            try await node.systemd.stop(unit)
            _ = try await Self.waitFor(node.systemd, unit, "stopped") {
                $0.activeState == "inactive" || $0.activeState == "failed"
            }
        }
    }

    @Test("starting a unit that does not exist is unitNotFound")
    func missingUnit() async throws {
        try await Self.withNode { node in
            let unit = try UnitName.service(module: "nope", service: "nothing")
            let error = try await #require(throws: MusterError.self) { try await node.systemd.start(unit) }
            #expect(error.code == .unitNotFound)
            #expect(error.message.contains(unit.rawValue))
        }
    }

    @Test("a unit that exists and is not ours is refused and keeps running untouched")
    func foreignUnit() async throws {
        try await Self.withNode { node in
            let unit = try UnitName.service(module: "web", service: "api")
            let path = node.writer.path(of: unit)
            let foreign = "[Unit]\nDescription=hand-written\n\n[Service]\nExecStart=/bin/sleep 300\n"
            try foreign.write(toFile: path, atomically: true, encoding: .utf8)
            try await node.systemd.daemonReload()
            let job = try await node.systemd.start(unit)
            guard case .active(let before) = try await node.systemd.waitUntilSettled(unit, job: job) else {
                Issue.record("the foreign unit did not start")
                return
            }
            let error = try #require(throws: MusterError.self) {
                try node.writer.write(Self.service(["/bin/true"], log: "\(node.scratch)/x.log"), as: unit)
            }
            #expect(error.code == .conflict)
            #expect(error.message.contains(path))
            #expect(try String(contentsOfFile: path, encoding: .utf8) == foreign)
            let after = try await node.systemd.state(of: unit)
            #expect(after.mainPID == before.mainPID)
            #expect(after.activeState == "active")
        }
    }

    @Test("the manager's private socket works as a direct (peer-to-peer) connection")
    func directConnection() async throws {
        try await Self.withNode { node in
            let direct = try await SystemdManager.connect(node.manager.privateAddress)
            let state = try await direct.state(of: try UnitName("default.target"))
            #expect(state.activeState == "active")
        }
    }

    @Test(
        "services start under every sandbox profile and can write their read-write paths",
        arguments: SandboxProfile.allCases)
    func sandboxProfiles(profile: SandboxProfile) async throws {
        try await Self.withNode { node in
            let unit = try UnitName.service(module: "sandbox", service: profile.rawValue)
            let rw = "\(node.manager.base)/rw"
            try FileManager.default.createDirectory(atPath: rw, withIntermediateDirectories: true)
            let log = "\(node.scratch)/sandbox.log"
            let file = Self.service(
                ["/bin/sh", "-c", "echo written > \(rw)/out && exec /bin/sleep 300"], sandbox: profile, log: log,
                readWritePaths: [rw])
            try node.writer.write(file, as: unit)
            try await node.systemd.daemonReload()
            let job = try await node.systemd.start(unit)
            let outcome = try await node.systemd.waitUntilSettled(unit, job: job, log: .file(log))
            guard case .active = outcome else {
                Issue.record(
                    "profile \(profile): \(outcome.failureMessage ?? "\(outcome)")\nmanager log:\n\(node.manager.log)")
                return
            }
            let final = try await Self.waitFor(node.systemd, unit, "out written") { state in
                FileManager.default.fileExists(atPath: "\(rw)/out") || state.activeState != "active"
            }
            #expect(
                FileManager.default.fileExists(atPath: "\(rw)/out"),
                "profile \(profile): \(final.activeState)/\(final.result ?? "?"), log: \(UnitLog.tail(path: log, lines: 10))"
            )
            try await node.systemd.stop(unit)
        }
    }

    /// The quoting round trip: ExecStart runs a script that writes its argv (and one environment variable) to a
    /// file; the bytes must equal what we asked for.
    @Test("ExecStart argv and Environment values reach the process byte for byte")
    func argvRoundTrip() async throws {
        try await Self.withNode { node in
            let script = "\(node.scratch)/argv.py"
            try """
            #!/usr/bin/python3
            import os, sys
            with open(sys.argv[1], "wb") as f:
                f.write(b"\\0".join(os.fsencode(a) for a in sys.argv[2:]))
                f.write(b"\\n---\\n" + os.environb.get(b"MUSTER_RT", b"<unset>"))
            """.write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            let out = "\(node.scratch)/argv.out"
            let args = [
                "plain", "with space", "  leading and trailing  ", "double \"quote\"", "single 'quote'",
                "back\\slash", "trailing backslash\\", "\\n is not a newline", "$HOME", "${HOME}", "$$", "100%",
                "%n %i %%", ";", "\\;", "", "ünïcödé ✓", "-x", "'", "\"", "a=b", "#not a comment", "[Service]",
                "x\\x41y",
            ]
            let envValue = "value with \"quotes\", \\backslash, 50% and $HOME"
            let unit = try UnitName.service(module: "rt", service: "argv")
            let file = Self.service(
                [script, out] + args, type: .oneshot, log: "\(node.scratch)/rt.log",
                environment: [.init("MUSTER_RT", envValue)])
            try node.writer.write(file, as: unit)
            try await node.systemd.daemonReload()
            let job = try await node.systemd.start(unit)
            let outcome = try await node.systemd.waitUntilSettled(unit, job: job, log: .file("\(node.scratch)/rt.log"))
            guard case .inactive = outcome else {
                Issue.record("expected a finished oneshot, got \(outcome.failureMessage ?? "\(outcome)")")
                return
            }
            let got = try Data(contentsOf: URL(fileURLWithPath: out))
            var expected = Data(args.joined(separator: "\0").utf8)
            expected.append(Data("\n---\n\(envValue)".utf8))
            #expect(got == expected, "got \(String(decoding: got, as: UTF8.self).debugDescription)")
        }
    }
}
