import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Agent

/// Bind volumes through real `.mount` units on a real systemd **system** manager (``SystemNode``). The volume
/// code runs in the test process: it reaches the node's manager over its system bus and looks into the node's
/// mount namespace through `/proc/PID1/root` and `/proc/PID1/mountinfo` (production: `/` and `/proc/self`).
@Suite("bind volumes on a system manager", .serialized, .requiresSystemd)
struct VolumeSystemNodeTests {
    static func manager(_ node: SystemNode) throws -> (VolumeManager, root: String) {
        guard let pid = node.initPID else { throw UserManagerError("node \(node.name) has no PID 1") }
        var logger = Logger(label: "volumes-test")
        logger.logLevel = .warning
        let probe = VolumeProbe(rootPrefix: "/proc/\(pid)/root", mountInfoPath: "/proc/\(pid)/mountinfo")
        let manager = VolumeManager(
            configuration: .init(
                unitDirectory: node.unitDirectory, connect: { try await SystemdManager.connect(node.busAddress) },
                probe: probe, log: .journal(directory: node.journalDirectory), timeout: .seconds(30)),
            logger: logger)
        return (manager, "/proc/\(pid)/root")
    }

    static func nodeMounts(_ manager: VolumeManager) throws -> MountTable {
        try MountTable.read(path: manager.configuration.probe.mountInfoPath)
    }

    @Test(
        "attach: unit active, in the node's mount table, writable, free space; twice = one unit; detach twice is a no-op"
    )
    func attachDetach() async throws {
        let dir = try TemporaryDirectory("vol-bind")
        defer { dir.remove() }
        let source = "\(dir.path)/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try "golden\n".write(toFile: "\(source)/README", atomically: true, encoding: .utf8)
        let mountPath = "\(dir.path)/mnt/data"
        let spec = VolumeSpec(name: "data", type: .bind, source: source, mountPath: mountPath)
        try await SystemNode.with { node in
            let (volumes, root) = try Self.manager(node)
            let status = try await volumes.mount(spec)
            #expect(status.mounted && status.writable, "\(status)")
            #expect(status.unitState == "active")
            #expect((status.freeBytes ?? 0) > 0 && (status.totalBytes ?? 0) >= (status.freeBytes ?? 0))
            #expect(try Self.nodeMounts(volumes).mount(at: mountPath) != nil)
            // Only in the node's mount namespace: the test process sees the empty mount point.
            #expect(try MountTable.read().mount(at: mountPath) == nil)
            #expect(
                try String(contentsOfFile: "\(root)\(mountPath)/README", encoding: .utf8) == "golden\n")
            // The probe file is gone again.
            #expect(try FileManager.default.contentsOfDirectory(atPath: source) == ["README"])

            let again = try await volumes.mount(spec)
            #expect(again.mounted && again.writable)
            let writer = UnitWriter(directory: node.unitDirectory)
            #expect(try writer.units(ownedBy: { MountUnit.volumeName(owner: $0) != nil }).count == 1)
            #expect(try Self.nodeMounts(volumes).entries.filter { $0.mountPoint == mountPath }.count == 1)

            let report = await volumes.statuses()
            #expect(report.map(\.name) == ["data"])
            #expect(report.first?.writable == true && report.first?.mounted == true)

            #expect(try await volumes.unmount(UnmountVolumeSpec(name: "data", mountPath: mountPath)))
            #expect(try Self.nodeMounts(volumes).mount(at: mountPath) == nil)
            #expect(try writer.owner(of: UnitName.mount(where: mountPath)) == nil)
            #expect(await volumes.statuses().isEmpty)
            #expect(try await volumes.unmount(UnmountVolumeSpec(name: "data", mountPath: mountPath)) == false)
            // The source is untouched.
            #expect(try String(contentsOfFile: "\(source)/README", encoding: .utf8) == "golden\n")
        }
    }

    @Test("a mount path that is a non-empty directory or a file is refused before any unit is written")
    func nonEmptyMountPath() async throws {
        let dir = try TemporaryDirectory("vol-busy")
        defer { dir.remove() }
        let source = "\(dir.path)/source"
        let busy = "\(dir.path)/busy"
        for d in [source, busy] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        try "keep me\n".write(toFile: "\(busy)/important", atomically: true, encoding: .utf8)
        try "x".write(toFile: "\(dir.path)/plainfile", atomically: true, encoding: .utf8)
        try await SystemNode.with { node in
            let (volumes, _) = try Self.manager(node)
            for (path, expected) in [
                (busy, "is a non-empty directory (1 entries)"), ("\(dir.path)/plainfile", "is not a directory"),
            ] {
                await #expect {
                    try await volumes.mount(VolumeSpec(name: "data", type: .bind, source: source, mountPath: path))
                } throws: { error in
                    (error as? MusterError)?.message.contains(expected) == true
                }
                #expect(try UnitWriter(directory: node.unitDirectory).owner(of: UnitName.mount(where: path)) == nil)
            }
            #expect(try String(contentsOfFile: "\(busy)/important", encoding: .utf8) == "keep me\n")
            // A bind source that does not exist on the node.
            await #expect {
                try await volumes.mount(
                    VolumeSpec(name: "data", type: .bind, source: "\(dir.path)/missing", mountPath: "\(dir.path)/m"))
            } throws: { error in
                (error as? MusterError)?.message.contains("is not a directory on this node") == true
            }
        }
    }

    @Test("a unit file the agent did not write is neither overwritten nor stopped nor removed")
    func foreignUnit() async throws {
        let dir = try TemporaryDirectory("vol-foreign")
        defer { dir.remove() }
        let source = "\(dir.path)/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let mountPath = "\(dir.path)/mnt"
        try await SystemNode.with { node in
            let (volumes, _) = try Self.manager(node)
            let unit = try UnitName.mount(where: mountPath)
            let foreign = "[Mount]\nWhat=\(source)\nWhere=\(mountPath)\nType=none\nOptions=bind\n"
            let path = "\(node.unitDirectory)/\(unit.rawValue)"
            try foreign.write(toFile: path, atomically: true, encoding: .utf8)
            await #expect {
                try await volumes.mount(VolumeSpec(name: "data", type: .bind, source: source, mountPath: mountPath))
            } throws: { error in
                (error as? MusterError)?.code == .conflict
            }
            await #expect {
                try await volumes.unmount(UnmountVolumeSpec(name: "data", mountPath: mountPath))
            } throws: { error in
                (error as? MusterError)?.message.contains("was not written by Muster") == true
            }
            #expect(try String(contentsOfFile: path, encoding: .utf8) == foreign)
            #expect(await volumes.statuses().isEmpty)
        }
    }
}
