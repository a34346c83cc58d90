import Foundation
import Shared
import Testing

@testable import Agent

/// Volume specs, their `.mount` units and the mount-table parser, without a service manager.
@Suite("volume units")
struct VolumeUnitTests {
    static func nfs(_ options: [String] = [], path: String = "/mnt/muster/golden-repos") -> VolumeSpec {
        VolumeSpec(
            name: "golden", type: .nfs4, server: "10.77.0.1", source: "/export/golden", options: options,
            mountPath: path)
    }

    @Test("an NFS volume's unit: escaped name, What/Where/Type, _netdev and the NFS defaults")
    func nfsUnit() throws {
        let (name, file) = try MountUnit.make(Self.nfs())
        #expect(name.rawValue == "mnt-muster-golden\\x2drepos.mount")
        let text = try file.render()
        #expect(text.contains("\nWhat=10.77.0.1:/export/golden\n"))
        #expect(text.contains("\nWhere=/mnt/muster/golden-repos\n"))
        #expect(text.contains("\nType=nfs4\n"))
        #expect(text.contains("\nOptions=_netdev,hard,timeo=600,retrans=2,noresvport\n"))
        #expect(text.contains("\nX-Muster-Owner=volume/golden\n"))
        #expect(text.contains("\nAfter=network-online.target\n"))
    }

    @Test("operator options come first and replace the defaults they name")
    func overrides() throws {
        #expect(
            MountUnit.options(for: Self.nfs(["soft", "timeo=100", "vers=4.2"]))
                == ["soft", "timeo=100", "vers=4.2", "_netdev", "retrans=2", "noresvport"])
        #expect(
            MountUnit.options(for: Self.nfs(["resvport", "_netdev"])) == [
                "resvport", "_netdev", "hard", "timeo=600", "retrans=2",
            ])
        var v3 = Self.nfs()
        v3.type = .nfs
        #expect(try MountUnit.make(v3).file.render().contains("\nType=nfs\n"))
    }

    @Test("a bind volume: Type=none, Options=bind, no network ordering")
    func bindUnit() throws {
        let spec = VolumeSpec(name: "data", type: .bind, source: "/srv/data", options: ["ro"], mountPath: "/mnt/data")
        let (name, file) = try MountUnit.make(spec)
        #expect(name.rawValue == "mnt-data.mount")
        let text = try file.render()
        #expect(text.contains("\nWhat=/srv/data\n"))
        #expect(text.contains("\nType=none\n"))
        #expect(text.contains("\nOptions=bind,ro\n"))
        #expect(!text.contains("network-online"))
        #expect(MountUnit.parse(text)?.where == "/mnt/data")
        #expect(MountUnit.parse(text)?.type == "none")
    }

    @Test(
        "generated volume units pass systemd-analyze verify without output",
        .enabled(if: UnitFileTests.hasAnalyze), arguments: VolumeType.allCases)
    func verify(type: VolumeType) throws {
        let spec =
            type == .bind
            ? VolumeSpec(name: "data", type: .bind, source: "/srv/data", mountPath: "/mnt/muster/data")
            : VolumeSpec(
                name: "golden", type: type, server: "nfs.example.org", source: "/export", options: ["vers=4.2"],
                mountPath: "/mnt/muster/golden")
        let (name, file) = try MountUnit.make(spec)
        let result = try UnitFileTests.verify(try file.render(), as: name.rawValue)
        #expect(result.status == 0, "verify exit \(result.status): \(result.stderr)")
        #expect(result.stderr.isEmpty, "\(result.stderr)")
    }

    @Test(
        "bad mount paths are refused with precise errors",
        arguments: [
            ("relative/dir", "is not an absolute path"),
            ("/mnt/../etc", "contains a '..' component"),
            ("/mnt/a b", "contains characters outside"),
            ("/mnt/new\nline", "contains characters outside"),
            ("/", "must not be '/'"),
        ])
    func badMountPaths(path: String, expected: String) {
        #expect {
            try MountUnit.make(Self.nfs(path: path))
        } throws: { error in
            guard let error = error as? MusterError else { return false }
            return error.code == .invalidInput && error.message.contains(expected)
        }
    }

    @Test(
        "bad names, servers and options are refused",
        arguments: [
            (VolumeSpec(name: "Bad Name", type: .bind, source: "/srv", mountPath: "/mnt/x"), "volume name"),
            (VolumeSpec(name: "x", type: .nfs4, server: nil, source: "/e", mountPath: "/mnt/x"), "NFS server"),
            (VolumeSpec(name: "x", type: .nfs4, server: "a b", source: "/e", mountPath: "/mnt/x"), "NFS server"),
            (VolumeSpec(name: "x", type: .nfs4, server: "s", source: "e", mountPath: "/mnt/x"), "NFS export"),
            (VolumeSpec(name: "x", type: .bind, server: "s", source: "/e", mountPath: "/mnt/x"), "no server"),
            (
                VolumeSpec(name: "x", type: .bind, source: "/e", options: ["ro,exec"], mountPath: "/mnt/x"),
                "mount option"
            ),
            (VolumeSpec(name: "x", type: .bind, source: "/e", options: ["-o"], mountPath: "/mnt/x"), "mount option"),
        ])
    func badSpecs(spec: VolumeSpec, expected: String) {
        #expect {
            try spec.validate()
        } throws: { error in
            (error as? MusterError)?.message.contains(expected) == true
        }
    }

    @Test("mountinfo: escaped mount points, the topmost mount wins, the source after the separator")
    func mountInfo() {
        let text = """
            22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
            40 22 0:40 / /mnt/a\\040b rw,relatime - tmpfs tmpfs rw
            41 22 8:1 /srv/data /mnt/data rw,relatime shared:1 - ext4 /dev/vda rw
            42 41 0:52 / /mnt/data rw,relatime - nfs4 10.77.0.1:/export rw,vers=4.2
            garbage line
            """
        let table = MountTable.parse(text)
        #expect(table.entries.count == 4)
        #expect(table.mount(at: "/mnt/a b")?.fileSystemType == "tmpfs")
        #expect(table.mount(at: "/mnt/data/")?.source == "10.77.0.1:/export")
        #expect(table.entries[2].root == "/srv/data")
        #expect(table.mount(at: "/mnt") == nil)
        #expect(VolumeProbe.server(of: "10.77.0.1:/export") == "10.77.0.1")
        #expect(VolumeProbe.server(of: "[fd00::1]:/export") == "fd00::1")
    }

    @Test("a health report without volumes (older agents) still decodes; with volumes it round-trips")
    func healthReportCompatibility() throws {
        let old =
            #"{"load":[0.1,0.2,0.3],"memoryTotalBytes":1,"memoryAvailableBytes":1,"diskTotalBytes":1,"diskFreeBytes":1,"uptimeSeconds":1,"agentVersion":"0.1","clock":"2026-11-22T10:00:00Z"}"#
        let decoded = try WireCoding.makeDecoder().decode(HealthReport.self, from: Data(old.utf8))
        #expect(decoded.volumes == nil)
        var report = decoded
        report.volumes = [
            VolumeStatus(
                name: "golden", mountPath: "/mnt/g", unitState: "active", mounted: true, writable: false,
                totalBytes: 10, freeBytes: 5, problem: "NFS server unreachable")
        ]
        let again = try WireCoding.makeDecoder().decode(
            HealthReport.self, from: try WireCoding.makeEncoder().encode(report))
        #expect(again == report)
    }
}
