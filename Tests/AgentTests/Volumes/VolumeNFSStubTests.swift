import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// NFS volumes with a **real NFS server** (nfs-ganesha in its own network namespace) and a **real systemd system
/// manager** as the node, living in the server's namespace. The real `muster-agent` binary runs inside the node
/// (`muster-agent volume …`, the code the `mountVolume` task runs) and talks to the node's manager over
/// `sd_bus_open_system()` as in production.
///
/// Substitution (hence `NFSStub` in every name): this kernel has no NFS client, so the node's `mount.nfs4` is the
/// stand-in of TESTING.md — it checks the export over real NFS RPC (libnfs `nfs-ls`) and then bind-mounts the
/// export's backing directory. The generated unit, its life cycle and the agent's checks are real; the kernel NFS
/// data path is not.
@Suite(
    "NFS volumes (NFSStub)", .serialized, .requiresSystemd, .requiresNetns,
    .enabled(if: Prerequisites.isCI || NFSServer.isAvailable, "requires nfs-ganesha and libnfs-utils"))
struct VolumeNFSStubTests {
    static var agent: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        let dir = (exe as NSString).deletingLastPathComponent
        if FileManager.default.isExecutableFile(atPath: "\(dir)/muster-agent") { return "\(dir)/muster-agent" }
        return FileManager.default.currentDirectoryPath + "/.build/debug/muster-agent"
    }

    /// Runs `muster-agent volume ARGS` inside the node; returns the exit status and the JSON it printed.
    static func agentVolume(_ node: SystemNode, _ args: [String]) throws -> (
        status: Int32, json: JSONValue, stderr: String
    ) {
        let output = try node.exec(
            [agent, "volume"] + args + [
                "--state-dir", "\(node.base)/agent", "--unit-directory", node.unitDirectory, "--log-level", "warning",
            ])
        let json = (try? JSONValue(parsing: output.stdout)) ?? .null
        return (output.status, json, output.stderr)
    }

    static func spec(_ node: SystemNode) -> VolumeSpec {
        VolumeSpec(
            name: "golden", type: .nfs4, server: "127.0.0.1", source: "/export", mountPath: "\(node.base)/vol/golden")
    }

    static func withServerAndNode(_ body: (NFSServer, SystemNode) async throws -> Void) async throws {
        let server = try await NFSServer.start()
        do {
            try await SystemNode.with(netns: server.netns, mountHelpers: server.helperDirectory) { node in
                try await body(server, node)
            }
        } catch {
            await server.teardown()
            throw error
        }
        await server.teardown()
    }

    static func nodeMountTable(_ node: SystemNode) throws -> MountTable {
        guard let pid = node.initPID else { throw UserManagerError("no PID 1") }
        return try MountTable.read(path: "/proc/\(pid)/mountinfo")
    }

    @Test("NFSStub: an nfs4 volume mounts through its generated unit, is writable, reports status and unmounts")
    func mountNFSStub() async throws {
        try await Self.withServerAndNode { server, node in
            let spec = Self.spec(node)
            let specText = try JSONValue(encoding: spec).jsonText
            let mounted = try Self.agentVolume(node, ["mount", "--spec", specText])
            #expect(mounted.status == 0, "\(mounted.json.jsonText) \(mounted.stderr)")
            let status = try mounted.json.decode(VolumeStatus.self)
            #expect(status.mounted && status.writable && status.unitState == "active", "\(status)")
            // mount(8) ran the helper for Type=nfs4 with the unit's What= and options.
            let helperLog = try String(contentsOfFile: server.helperLog, encoding: .utf8)
            #expect(helperLog.contains("mount.nfs-stub: 127.0.0.1:/export -> \(spec.mountPath)"))
            #expect(helperLog.contains("hard,timeo=600,retrans=2,noresvport") && helperLog.contains("_netdev"))
            let unit = try String(
                contentsOfFile: "\(node.unitDirectory)/\(UnitName.mount(where: spec.mountPath).rawValue)",
                encoding: .utf8)
            #expect(unit.contains("Type=nfs4") && unit.contains("What=127.0.0.1:/export"))
            // Data written through the mount lands in the export.
            let pid = try #require(node.initPID)
            try "from the node\n".write(
                toFile: "/proc/\(pid)/root\(spec.mountPath)/hello", atomically: false, encoding: .utf8)
            #expect(try String(contentsOfFile: "\(server.exportDirectory)/hello", encoding: .utf8) == "from the node\n")

            // Attaching again changes nothing.
            let again = try Self.agentVolume(node, ["mount", "--spec", specText])
            #expect(again.status == 0, "\(again.json.jsonText)")
            #expect(try Self.nodeMountTable(node).entries.filter { $0.mountPoint == spec.mountPath }.count == 1)

            let report = try Self.agentVolume(node, ["status"])
            let volumes = try report.json.decode([VolumeStatus].self)
            #expect(volumes.count == 1 && volumes.first?.writable == true, "\(report.json.jsonText)")

            let removed = try Self.agentVolume(node, ["unmount", "--name", "golden", "--mount-path", spec.mountPath])
            #expect(
                removed.status == 0 && removed.json == .object(["removed": .bool(true)]), "\(removed.json.jsonText)")
            #expect(try Self.nodeMountTable(node).mount(at: spec.mountPath) == nil)
            let noop = try Self.agentVolume(node, ["unmount", "--name", "golden", "--mount-path", spec.mountPath])
            #expect(noop.status == 0 && noop.json == .object(["removed": .bool(false)]))
        }
    }

    @Test("NFSStub: server down at attach: the unit fails, the mount error is reported, nothing is left behind")
    func serverDownNFSStub() async throws {
        try await Self.withServerAndNode { server, node in
            await server.stopServer()
            let spec = Self.spec(node)
            let result = try Self.agentVolume(node, ["mount", "--spec", try JSONValue(encoding: spec).jsonText])
            #expect(result.status == 1, "\(result.json.jsonText)")
            guard case .object(let body) = result.json, case .object(let error)? = body["error"],
                case .string(let message)? = error["message"]
            else {
                Issue.record("no error JSON: \(result.json.jsonText) \(result.stderr)")
                return
            }
            #expect(message.contains("mounting volume golden"), "\(message)")
            #expect(message.contains("export not reachable"), "the helper's message from the journal: \(message)")
            #expect(message.contains("nothing was left mounted"), "\(message)")
            #expect(try Self.nodeMountTable(node).mount(at: spec.mountPath) == nil)
            let unitPath = "\(node.unitDirectory)/\(try UnitName.mount(where: spec.mountPath).rawValue)"
            #expect(!FileManager.default.fileExists(atPath: unitPath))
            let report = try Self.agentVolume(node, ["status"])
            #expect(report.json == .array([]), "\(report.json.jsonText)")
        }
    }

    @Test("NFSStub: server lost after attach: the status shows the volume mounted but not writable")
    func serverLostNFSStub() async throws {
        try await Self.withServerAndNode { server, node in
            let spec = Self.spec(node)
            let mounted = try Self.agentVolume(node, ["mount", "--spec", try JSONValue(encoding: spec).jsonText])
            #expect(mounted.status == 0, "\(mounted.json.jsonText) \(mounted.stderr)")
            await server.stopServer()
            let report = try Self.agentVolume(node, ["status"])
            let volumes = try report.json.decode([VolumeStatus].self)
            let status = try #require(volumes.first, "\(report.json.jsonText)")
            #expect(status.mounted && !status.writable, "\(status)")
            #expect(status.problem?.contains("NFS server 127.0.0.1 unreachable") == true, "\(status)")
        }
    }
}
