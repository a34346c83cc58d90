import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

#if canImport(Glibc)
    import Glibc
#endif

/// The whole volume path with the real binaries: `muster serve` (PostgreSQL from the test harness) on the host,
/// `muster-agent join --run` **inside** a node that is a real systemd system manager (``SystemNode``), and the
/// operator's `muster volume create / attach --wait / ls / detach --wait`. The agent writes the `.mount` unit into
/// the node's unit directory, starts it over the node's system bus and reports the volume in its heartbeats.
@Suite("volumes through the coordinator onto a systemd node", .serialized, .requiresSystemd)
struct VolumeClusterTests {
    static var binDirectory: String { (VolumeNFSStubTests.agent as NSString).deletingLastPathComponent }

    /// Runs `muster ARGS --state-dir DIR`.
    static func muster(_ stateDir: String, _ args: [String]) throws -> CommandOutput {
        try runCommand("\(binDirectory)/muster", args + ["--state-dir", stateDir])
    }

    static func stop(_ pid: pid_t) {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<100 {
            if waitpid(pid, &status, WNOHANG) == pid { return }
            usleep(50_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
    }

    static func json(_ text: String) -> JSONValue { (try? JSONValue(parsing: text)) ?? .null }

    static func field(_ value: JSONValue?, _ path: String...) -> JSONValue? {
        var current = value
        for key in path {
            guard case .object(let object)? = current else { return nil }
            current = object[key]
        }
        return current
    }

    @Test("muster volume attach --wait mounts on the node, ls shows it mounted and writable, detach --wait unmounts")
    func attachThroughTheCoordinator() async throws {
        let dir = try TemporaryDirectory("vol-cluster")
        defer { dir.remove() }
        let (database, url) = try PostgresHarness.makeDatabase(prefix: "volcl")
        defer { PostgresHarness.dropDatabase(database) }
        let stateDir = "\(dir.path)/coordinator"
        let coordinator = try UserManager.spawn(
            [
                "\(Self.binDirectory)/muster", "serve", "--state-dir", stateDir, "--database-url", url,
                "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--advertise", "127.0.0.1",
                "--heartbeat-interval", "1s", "--heartbeat-grace", "2s", "--failover-grace", "0s",
            ], log: "\(dir.path)/coordinator.log")
        defer { Self.stop(coordinator) }
        var agentAddress: String?
        for _ in 0..<600 where agentAddress == nil {
            if let data = FileManager.default.contents(atPath: "\(stateDir)/admin.json"),
                case .string(let address)? = Self.field(
                    Self.json(String(decoding: data, as: UTF8.self)), "agentAddress")
            {
                agentAddress = address
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let coordinatorLog = { (try? String(contentsOfFile: "\(dir.path)/coordinator.log", encoding: .utf8)) ?? "" }
        let address = try #require(agentAddress, "coordinator not ready:\n\(coordinatorLog().suffix(3000))")
        let token = try Self.muster(stateDir, ["token", "create", "--quiet"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let source = "\(dir.path)/data"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try "golden\n".write(toFile: "\(source)/README", atomically: true, encoding: .utf8)
        let mountPath = "\(dir.path)/mnt/data"

        try await SystemNode.with { node in
            let pid1 = try #require(node.initPID)
            let agentState = "\(dir.path)/agent"
            let agent = try UserManager.spawn(
                [
                    "/usr/bin/nsenter", "-t", "\(pid1)", "-m", "-p", "-u", VolumeNFSStubTests.agent, "join",
                    "--coordinator", address, "--token", token, "--state-dir", agentState, "--run",
                    "--unit-directory", node.unitDirectory,
                ], log: "\(dir.path)/agent.log")
            defer { Self.stop(agent) }
            let agentLog = { (try? String(contentsOfFile: "\(dir.path)/agent.log", encoding: .utf8)) ?? "" }
            var nodeID: String?
            for _ in 0..<300 where nodeID == nil {
                nodeID = (try? String(contentsOfFile: "\(agentState)/identity/node-id", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                if nodeID == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let id = try #require(nodeID, "the agent did not join:\n\(agentLog().suffix(3000))")

            let created = try Self.muster(
                stateDir, ["volume", "create", "data", "--bind", source, "--mount-path", mountPath])
            #expect(created.status == 0, "\(created.stderr)")
            let attach = try Self.muster(
                stateDir, ["volume", "attach", "data", "--node", id, "--wait", "--timeout", "90s", "--json"])
            #expect(attach.status == 0, "\(attach.stdout)\n\(attach.stderr)\n\(agentLog().suffix(3000))")
            guard case .array(let changes) = Self.json(attach.stdout), let change = changes.first else {
                Issue.record("no changes: \(attach.stdout)")
                return
            }
            #expect(Self.field(change, "task", "state") == .string("succeeded"))
            #expect(Self.field(change, "task", "result", "writable") == .bool(true))
            // Mounted in the node, by a unit the agent wrote there.
            #expect(try MountTable.read(path: "/proc/\(pid1)/mountinfo").mount(at: mountPath) != nil)
            #expect(try String(contentsOfFile: "/proc/\(pid1)/root\(mountPath)/README", encoding: .utf8) == "golden\n")
            let unitPath = "\(node.unitDirectory)/\(try UnitName.mount(where: mountPath).rawValue)"
            #expect(try String(contentsOfFile: unitPath, encoding: .utf8).contains("X-Muster-Owner=volume/data"))

            // The next heartbeats carry the volume: `muster volume ls` shows it mounted and writable on the node.
            var status: JSONValue?
            for _ in 0..<100 {
                let listed = try Self.muster(stateDir, ["volume", "ls", "--json"])
                if case .array(let volumes) = Self.json(listed.stdout),
                    case .array(let attachments)? = Self.field(volumes.first, "attachments"),
                    let reported = Self.field(attachments.first, "status")
                {
                    status = reported
                    break
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            let reported = try #require(status, "no status in muster volume ls")
            #expect(Self.field(reported, "mounted") == .bool(true) && Self.field(reported, "writable") == .bool(true))

            let detach = try Self.muster(stateDir, ["volume", "detach", "data", "--all", "--wait", "--json"])
            #expect(detach.status == 0, "\(detach.stdout)\n\(detach.stderr)")
            #expect(try MountTable.read(path: "/proc/\(pid1)/mountinfo").mount(at: mountPath) == nil)
            #expect(!FileManager.default.fileExists(atPath: unitPath))
        }
    }
}
