import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// Against a real systemd **system** manager (PID 1 of its own namespaces, ``SystemNode``) over its system bus:
/// the scope the agent uses in production.
@Suite("systemd system manager node", .serialized, .requiresSystemd)
struct SystemNodeTests {
    @Test("services start under every sandbox profile of a system manager and write only their read-write paths")
    func sandboxProfiles() async throws {
        try await SystemNode.with { node in
            let systemd = try await SystemdManager.connect(node.busAddress)
            let writer = UnitWriter(directory: node.unitDirectory)
            try FileManager.default.createDirectory(
                atPath: node.hostPath(ofNodeRun: "rw"), withIntermediateDirectories: true)
            // Outside /tmp (PrivateTmp) and /run (left writable by ProtectSystem=strict): a directory of our own on
            // the host's file system, which ProtectSystem=strict makes read-only.
            let probeDirectory = "/var/lib/muster-test-\(node.name)"
            try FileManager.default.createDirectory(atPath: probeDirectory, withIntermediateDirectories: true)
            defer { _ = try? FileManager.default.removeItem(atPath: probeDirectory) }
            var started: [(SandboxProfile, UnitName)] = []
            for profile in SandboxProfile.allCases {
                let unit = try UnitName.service(module: "sandbox", service: profile.rawValue)
                // Inside the node /run is BASE/run; /run/rw is the only writable path under the strict profiles.
                let file = UnitFile(
                    owner: "sandbox/\(profile.rawValue)", unit: .init(description: "sandbox \(profile.rawValue)"),
                    service: .init(
                        execStart: [
                            "/bin/sh", "-c",
                            "(echo x > \(probeDirectory)/\(profile.rawValue) || true); echo written > /run/rw/\(profile.rawValue) "
                                + "&& exec /bin/sleep 300",
                        ],
                        readWritePaths: ["/run/rw"], sandbox: profile,
                        standardOutput: .append("/run/\(profile.rawValue).log"),
                        standardError: .append("/run/\(profile.rawValue).log")),
                    scope: .system)
                try writer.write(file, as: unit)
                started.append((profile, unit))
            }
            try await systemd.daemonReload()
            for (profile, unit) in started {
                let job = try await systemd.start(unit)
                let outcome = try await systemd.waitUntilSettled(
                    unit, job: job, log: .file(node.hostPath(ofNodeRun: "\(profile.rawValue).log")))
                guard case .active(let state) = outcome else {
                    Issue.record("profile \(profile): \(outcome.failureMessage ?? "\(outcome)")")
                    continue
                }
                #expect(state.mainPID > 0)
                // The probe is tried before the read-write file is written: once that exists, the probe is decided.
                let written = node.hostPath(ofNodeRun: "rw/\(profile.rawValue)")
                for _ in 0..<500 where !FileManager.default.fileExists(atPath: written) {
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(FileManager.default.fileExists(atPath: written))
                // The probe directory is not a read-write path: only the trusted profile can write there.
                let probe = "\(probeDirectory)/\(profile.rawValue)"
                #expect(FileManager.default.fileExists(atPath: probe) == (profile == .trusted), "\(profile): \(probe)")
            }
        }
    }

    @Test("a Type=notify service with a watchdog becomes active, and one that stops pinging fails with Result=watchdog")
    func notifyAndWatchdog() async throws {
        try await SystemNode.with { node in
            let systemd = try await SystemdManager.connect(node.busAddress)
            let writer = UnitWriter(directory: node.unitDirectory)
            func notifyService(_ name: String, _ script: String) throws -> UnitName {
                let unit = try UnitName.service(module: "wd", service: name)
                let file = UnitFile(
                    owner: "wd/\(name)", unit: .init(description: "watchdog \(name)"),
                    service: .init(
                        type: .notify, execStart: ["/bin/sh", "-c", script], restart: .no,
                        watchdogSec: .seconds(1), notifyAccess: .all, sandbox: .default,
                        standardOutput: .append("/run/\(name).log"), standardError: .append("/run/\(name).log")),
                    scope: .system)
                try writer.write(file, as: unit)
                return unit
            }
            let healthy = try notifyService(
                "healthy", "systemd-notify --ready; while :; do systemd-notify WATCHDOG=1; sleep 0.2; done")
            let silent = try notifyService("silent", "systemd-notify --ready; exec sleep 300")
            try await systemd.daemonReload()

            let outcome = try await systemd.waitUntilSettled(healthy, job: try await systemd.start(healthy))
            #expect(outcome == .active(outcome.state), "\(outcome.failureMessage ?? "")")

            let job = try await systemd.start(silent)
            _ = try await systemd.waitUntilSettled(silent, job: job, settle: .zero)
            // No ping ever comes: systemd kills it when WatchdogSec runs out.
            var state = try await systemd.state(of: silent)
            for _ in 0..<1000 where state.activeState != "failed" {
                try await Task.sleep(for: .milliseconds(20))
                state = try await systemd.state(of: silent)
            }
            #expect(state.activeState == "failed")
            #expect(state.result == "watchdog")
            #expect(try await systemd.state(of: healthy).activeState == "active")
        }
    }

    @Test("a failing service's last journal lines are read with sd-journal from the node's journal")
    func journalTail() async throws {
        try await SystemNode.with { node in
            let systemd = try await SystemdManager.connect(node.busAddress)
            let writer = UnitWriter(directory: node.unitDirectory)
            let unit = try UnitName.service(module: "web", service: "broken")
            // No StandardOutput=: the output goes to the node's journald, as in production.
            let file = UnitFile(
                owner: "web/broken", unit: .init(description: "broken"),
                service: .init(execStart: ["/bin/sh", "-c", "echo first line; echo 'second line' >&2; exit 3"]),
                scope: .system)
            try writer.write(file, as: unit)
            try await systemd.daemonReload()
            let source = UnitLogSource.journal(directory: node.journalDirectory)
            let outcome = try await systemd.waitUntilSettled(unit, job: try await systemd.start(unit), log: source)
            guard case .failed(let state, _) = outcome else {
                Issue.record("expected failed, got \(outcome)")
                return
            }
            #expect(state.result == "exit-code")
            // journald stores stream lines asynchronously: poll until they are there.
            var tail: [String] = []
            for _ in 0..<500 {
                tail = await UnitLog.tail(of: unit, from: source, lines: 20)
                if tail.contains("second line") { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(tail.contains("first line"), "\(tail)")
            #expect(tail.contains("second line"), "\(tail)")
        }
    }

    @Test("a generated .mount unit mounts a file-backed erofs image inside the node, and a service reads through it")
    func erofsMountUnit() async throws {
        try await SystemNode.with { node in
            let systemd = try await SystemdManager.connect(node.busAddress)
            let writer = UnitWriter(directory: node.unitDirectory)
            let source = "\(node.base)/image-src"
            try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
            try "hello from erofs\n".write(toFile: "\(source)/hello", atomically: true, encoding: .utf8)
            let image = "\(node.base)/meta.erofs"
            let mkfs = try runCommand("/usr/bin/mkfs.erofs", ["--quiet", image, source])
            #expect(mkfs.status == 0, "mkfs.erofs: \(mkfs.stderr)")

            // A mount point with characters that need escaping in the unit name.
            let mountPoint = "/run/muster/modules/web-1.0"
            let mountUnit = try UnitName.mount(where: mountPoint)
            #expect(mountUnit.rawValue == "run-muster-modules-web\\x2d1.0.mount")
            try FileManager.default.createDirectory(
                atPath: node.hostPath(ofNodeRun: "muster/modules/web-1.0"), withIntermediateDirectories: true)
            try writer.write(
                UnitFile(
                    owner: "web/mount", unit: .init(description: "module web 1.0 image"),
                    mount: .init(what: image, where: mountPoint, type: "erofs", options: ["ro"])),
                as: mountUnit)
            let reader = try UnitName.service(module: "web", service: "reader")
            try writer.write(
                UnitFile(
                    owner: "web/reader",
                    unit: .init(description: "reads the image", after: [mountUnit], requires: [mountUnit]),
                    service: .init(
                        type: .oneshot, execStart: ["/bin/cp", "\(mountPoint)/hello", "/run/copied"],
                        sandbox: .default),
                    scope: .system),
                as: reader)
            try await systemd.daemonReload()
            let outcome = try await systemd.waitUntilSettled(reader, job: try await systemd.start(reader))
            #expect(outcome == .inactive(outcome.state), "\(outcome.failureMessage ?? "\(outcome)")")
            let mount = try await systemd.state(of: mountUnit)
            #expect(mount.activeState == "active")
            #expect(mount.result == "success")
            let copied = try String(contentsOfFile: node.hostPath(ofNodeRun: "copied"), encoding: .utf8)
            #expect(copied == "hello from erofs\n")

            try await systemd.stop(mountUnit)
            var state = try await systemd.state(of: mountUnit)
            for _ in 0..<500 where state.activeState != "inactive" {
                try await Task.sleep(for: .milliseconds(20))
                state = try await systemd.state(of: mountUnit)
            }
            #expect(state.activeState == "inactive")
        }
    }
}
