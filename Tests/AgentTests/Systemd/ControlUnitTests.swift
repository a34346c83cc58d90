import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// The `controlUnit` task against a real systemd system manager (``SystemNode``).
@Suite("controlUnit task on a system manager", .serialized, .requiresSystemd)
struct ControlUnitTests {
    @Test func startStatusStopAndFailures() async throws {
        try await SystemNode.with { node in
            let systemd = try await SystemdManager.connect(node.busAddress)
            let writer = UnitWriter(directory: node.unitDirectory)
            func service(_ name: String, _ command: String) throws -> UnitName {
                let unit = try UnitName.service(module: "ctl", service: name)
                try writer.write(
                    UnitFile(
                        owner: "ctl/\(name)", unit: .init(description: "controlUnit \(name)"),
                        service: .init(
                            execStart: ["/bin/sh", "-c", command], sandbox: .trusted,
                            standardOutput: .append("/run/\(name).log"), standardError: .append("/run/\(name).log")),
                        scope: .system),
                    as: unit)
                return unit
            }
            let good = try service("good", "exec /bin/sleep 300")
            let bad = try service("bad", "echo 'cannot open the database' >&2; exit 3")
            try await systemd.daemonReload()
            func control(_ unit: String, _ action: ControlUnit.Action, log: String? = nil) async throws -> JSONValue {
                try await ControlUnit(
                    connect: { systemd }, log: log.map { .file(node.hostPath(ofNodeRun: $0)) }
                ).run(
                    spec: try JSONValue(encoding: ControlUnit.Spec(unit: unit, action: action, timeoutSeconds: 30)),
                    progress: TaskProgressReporter { _ in })
            }
            func field(_ value: JSONValue, _ key: String) -> JSONValue? {
                guard case .object(let object) = value else { return nil }
                return object[key]
            }

            let started = try await control(good.rawValue, .start)
            #expect(field(started, "activeState") == .string("active"))
            #expect((field(started, "mainPID").flatMap { if case .number(let n) = $0 { n } else { nil } } ?? 0) > 0)
            // Starting an active unit again changes nothing.
            #expect(field(try await control(good.rawValue, .start), "mainPID") == field(started, "mainPID"))
            #expect(field(try await control(good.rawValue, .status), "activeState") == .string("active"))
            #expect(field(try await control(good.rawValue, .stop), "activeState") == .string("inactive"))
            #expect(field(try await control(good.rawValue, .stop), "activeState") == .string("inactive"))

            await #expect {
                _ = try await control(bad.rawValue, .start, log: "bad.log")
            } throws: { error in
                guard let failure = error as? TaskFailure else { return false }
                return failure.code == MusterError.Code.unitFailed.wireName
                    && failure.message.contains("exit status 3")
                    && failure.message.contains("cannot open the database")
            }
            await #expect {
                _ = try await control("nonexistent-muster-test.service", .status)
            } throws: { ($0 as? MusterError)?.code == .unitNotFound }
            await #expect {
                _ = try await control("bad\nname.service", .start)
            } throws: { ($0 as? MusterError)?.code == .invalidInput }
        }
    }
}
