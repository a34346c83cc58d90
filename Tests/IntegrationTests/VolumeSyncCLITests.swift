import Foundation
import Shared
import TestSupport
import Testing

/// `muster sync` and `muster volume` with the real binaries: coordinator on the host bridge, the agent in its own
/// network namespace (same file system), PostgreSQL for the state.
///
/// The agent here has no service manager (PID 1 of this machine is not systemd), so an attach fails on it with
/// the agent's own "cannot connect to systemd" error; that failure path is what this suite checks for volumes.
/// Mounting through real `.mount` units is covered in `AgentTests/Volumes` (system manager per node, real
/// nfs-ganesha).
@Suite("muster sync and muster volume end to end", .serialized, .requiresRoot, .requiresNetns)
struct VolumeSyncCLITests {
    /// Decoded NDJSON lines of `muster sync --json`.
    static func events(_ stdout: String) -> [JSONValue] {
        stdout.split(separator: "\n").compactMap { try? JSONValue(parsing: String($0)) }
    }

    static func field(_ value: JSONValue, _ path: String...) -> JSONValue? {
        var current: JSONValue? = value
        for key in path {
            guard case .object(let object)? = current else { return nil }
            current = object[key]
        }
        return current
    }

    @Test("muster sync copies on the node with progress events, refuses bad paths with exit 2; volume CLI round trip")
    func syncAndVolumes() async throws {
        let cluster = try ClusterTests.Cluster(agents: 1)
        defer { cluster.tearDown() }
        do {
            let coordinator = try await cluster.startCoordinator()
            let (_, ids) = try await ClusterTests.joinAll(cluster, coordinator: coordinator, count: 1)
            let node = ids[0]
            let source = try cluster.scratch.sub("src")
            let destination = "\(cluster.scratch.path)/dst"
            for i in 0..<50 {
                try Data(repeating: UInt8(i), count: 4096 + i).write(to: URL(fileURLWithPath: "\(source)/f\(i)"))
            }
            try Data(repeating: 1, count: 16 << 20).write(to: URL(fileURLWithPath: "\(source)/big"))

            let sync = try await coordinator.cli(
                ["sync", source, destination, "--node", node, "--verify", "sample", "--json"])
            #expect(sync.status == 0, "\(sync.stdout)\n\(sync.stderr)\n\(cluster.logs())")
            let events = Self.events(sync.stdout)
            let progress = events.filter { Self.field($0, "event") == .string("progress") }
            #expect(!progress.isEmpty, "progress events in \(sync.stdout)")
            let last = try #require(events.last)
            #expect(Self.field(last, "event") == .string("result"))
            #expect(Self.field(last, "task", "state") == .string("succeeded"))
            #expect(Self.field(last, "task", "kind") == .string("syncTree"))
            #expect(FileManager.default.contentsEqual(atPath: "\(source)/big", andPath: "\(destination)/big"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: destination).count == 51)

            // Human output without a terminal: progress lines on stderr, a summary on stdout.
            let rerun = try await coordinator.cli(["sync", source, destination, "--node", node])
            #expect(rerun.status == 0, "\(rerun.stderr)")
            #expect(rerun.stdout.contains("0 files transferred"), "\(rerun.stdout)")

            let bad = try await coordinator.cli(["sync", "relative/src", destination, "--node", node])
            #expect(bad.status == 2, "\(bad.stdout) \(bad.stderr)")
            #expect(bad.stderr.contains("not an absolute path"), "\(bad.stderr)")

            // Volumes: create, refuse a duplicate, list, attach (fails on this agent: no service manager), detach.
            let dataDir = try cluster.scratch.sub("data")
            let created = try await coordinator.cli(
                ["volume", "create", "data", "--bind", dataDir, "--mount-path", "/mnt/muster-it/data", "--json"])
            #expect(created.status == 0, "\(created.stderr)")
            let duplicate = try await coordinator.cli(["volume", "create", "data", "--bind", dataDir])
            #expect(duplicate.status == 1 && duplicate.stderr.contains("exists already"), "\(duplicate.stderr)")
            let noSource = try await coordinator.cli(["volume", "create", "x"])
            #expect(noSource.status == 2, "\(noSource.stderr)")
            let nfs = try await coordinator.cli([
                "volume", "create", "golden", "--nfs", "10.77.0.1:/export", "--options", "soft,timeo=100",
            ])
            #expect(nfs.status == 0, "\(nfs.stderr)")

            let attach = try await coordinator.cli([
                "volume", "attach", "data", "--node", node, "--wait", "--timeout", "60s",
            ])
            #expect(attach.status == 1, "\(attach.stdout) \(attach.stderr)")
            #expect(attach.stderr.contains("cannot connect to systemd"), "\(attach.stderr)")

            let listed = try await coordinator.cli(["volume", "ls", "--json"])
            #expect(listed.status == 0, "\(listed.stderr)")
            let volumes = try JSONValue(parsing: listed.stdout)
            guard case .array(let items) = volumes else {
                Issue.record("not a list: \(listed.stdout)")
                return
            }
            #expect(items.compactMap { Self.field($0, "name") } == [.string("data"), .string("golden")])
            #expect(Self.field(items[0], "type") == .string("bind"))
            if case .array(let attachments)? = Self.field(items[0], "attachments") {
                #expect(attachments.count == 1)
                #expect(attachments.first.flatMap { Self.field($0, "taskState") } == .string("failed"))
            } else {
                Issue.record("no attachments in \(listed.stdout)")
            }
            #expect(Self.field(items[1], "options") == .array([.string("soft"), .string("timeo=100")]))

            // Detaching where it was never attached is a no-op success.
            let detachNone = try await coordinator.cli(["volume", "detach", "golden", "--all", "--json"])
            #expect(
                detachNone.status == 0 && (try? JSONValue(parsing: detachNone.stdout)) == .array([]),
                "\(detachNone.stdout)")
        } catch {
            Issue.record("\(error)\n\(cluster.logs())")
            throw error
        }
    }

    @Test(
        "node → node: the source agent serves through a read-only rsync daemon with a per-task secret, the destination pulls"
    )
    func nodeToNode() async throws {
        let cluster = try ClusterTests.Cluster(agents: 2)
        defer { cluster.tearDown() }
        do {
            let coordinator = try await cluster.startCoordinator()
            let (_, ids) = try await ClusterTests.joinAll(cluster, coordinator: coordinator, count: 2)
            let source = try cluster.scratch.sub("golden")
            let destination = "\(cluster.scratch.path)/copy"
            for i in 0..<30 {
                try Data(repeating: UInt8(i), count: 2048 * (i + 1)).write(to: URL(fileURLWithPath: "\(source)/f\(i)"))
            }
            try FileManager.default.createDirectory(atPath: "\(source)/sub", withIntermediateDirectories: true)
            try "nested\n".write(toFile: "\(source)/sub/n", atomically: true, encoding: .utf8)
            let before = try FileManager.default.subpathsOfDirectory(atPath: source).sorted()

            let sync = try await coordinator.cli(
                ["sync", source, destination, "--node", ids[1], "--from-node", ids[0], "--json", "--timeout", "120s"])
            #expect(sync.status == 0, "\(sync.stdout)\n\(sync.stderr)\n\(cluster.logs())")
            let last = try #require(Self.events(sync.stdout).last)
            #expect(Self.field(last, "task", "state") == .string("succeeded"))
            #expect(Self.field(last, "task", "nodeID") == .string(ids[1]))
            #expect(
                Self.field(last, "task", "spec", "source").map {
                    if case .string(let s) = $0 {
                        s.hasPrefix("rsync://muster@\(cluster.nodes.nodes[0].address):")
                    } else {
                        false
                    }
                } == true,
                "pulled from node 0's cluster address: \(last.jsonText)")
            #expect(try FileManager.default.subpathsOfDirectory(atPath: destination).sorted() == before)
            #expect(FileManager.default.contentsEqual(atPath: "\(source)/f29", andPath: "\(destination)/f29"))
            #expect(try FileManager.default.subpathsOfDirectory(atPath: source).sorted() == before, "source unchanged")

            // The serve task on node 0 ends by itself once the pull is over, and removes its secrets.
            let serve = try await eventually("the serve task on node 0 finished") { () async throws -> JSONValue? in
                let tasks = try await coordinator.cli(["tasks", "ls", "--node", ids[0], "--json"])
                guard case .array(let items) = try JSONValue(parsing: tasks.stdout), let serve = items.first,
                    Self.field(serve, "state") != .string("running")
                else { return nil }
                return serve
            }
            #expect(Self.field(serve, "state") == .string("succeeded"), "\(serve.jsonText)")
            #expect(Self.field(serve, "result", "transferred") == .bool(true))
            let privateDir = "\(cluster.scratch.path)/agent0/rsync"
            #expect((try? FileManager.default.contentsOfDirectory(atPath: privateDir)) ?? [] == [], "secrets removed")

            // A pull with the wrong secret is refused by the daemon.
            let port = Int.random(in: 50000...59999)
            let serveSpec =
                #"{"serve": {"path": "\#(source)", "address": "\#(cluster.nodes.nodes[0].address)", "port": \#(port), "module": "m1", "secret": "right-secret-0123456789", "maxSeconds": 20}}"#
            let served = try await coordinator.cli([
                "tasks", "run", "--node", ids[0], "--kind", "syncTree", "--spec", serveSpec, "--max-attempts", "1",
                "--quiet",
            ])
            #expect(served.status == 0, "\(served.stderr)")
            let pullSpec =
                #"{"source": "rsync://muster@\#(cluster.nodes.nodes[0].address):\#(port)/m1/", "destination": "\#(cluster.scratch.path)/denied", "secret": "wrong-secret-0123456789"}"#
            let denied = try await coordinator.cli([
                "tasks", "run", "--node", ids[1], "--kind", "syncTree", "--spec", pullSpec, "--max-attempts", "1",
                "--wait", "--json",
            ])
            #expect(denied.status == 1, "\(denied.stdout) \(denied.stderr)")
            #expect(
                denied.stdout.contains("auth failed") || denied.stdout.contains("client-server protocol"),
                "\(denied.stdout)")
            #expect(
                (try? FileManager.default.contentsOfDirectory(atPath: "\(cluster.scratch.path)/denied")) ?? [] == [])
            _ = try await coordinator.cli([
                "tasks", "cancel", served.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
            ])
        } catch {
            Issue.record("\(error)\n\(cluster.logs())")
            throw error
        }
    }
}
