import Foundation
import Shared
import TestSupport
import Testing

@testable import Coordinator

@Suite("Module tree: scanning and checks against rootfs/")
struct ModuleTreeTests {
    /// Loads the fixture like the builder does and returns the issues (empty = valid).
    static func issues(_ fixture: ModuleFixture) throws -> [ModuleManifest.Issue] {
        do {
            _ = try ModuleBuilder.load(moduleDirectory: fixture.directory)
            return []
        } catch let error as ModuleManifest.ValidationError {
            return error.issues
        }
    }

    @Test("the standard fixture is valid and scans in sorted pre-order")
    func standardFixture() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        let (manifest, tree) = try ModuleBuilder.load(moduleDirectory: fixture.directory)
        #expect(manifest.services.map(\.name) == ["api", "db"])
        let paths = tree.entries.map(\.path)
        #expect(paths.first == "/")
        #expect(paths.contains("/bin/api") && paths.contains("/share/big.bin"))
        // Every directory comes before its contents, siblings sorted.
        #expect(paths.firstIndex(of: "/bin") ?? 99 < paths.firstIndex(of: "/bin/api") ?? 0)
        #expect(paths.firstIndex(of: "/bin/api") ?? 99 < paths.firstIndex(of: "/bin/api-link") ?? 0)
        #expect(tree.resolve("/bin/api-link") == .regularFile(executable: true))
        #expect(tree.resolve("/etc/config") == .regularFile(executable: false))
        #expect(tree.resolve("/nope") == .missing)
    }

    @Test("exec[0] must exist in rootfs/")
    func execMissing() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        try FileManager.default.removeItem(atPath: fixture.rootfs + "/bin/db")
        let issues = try Self.issues(fixture)
        let issue = try #require(issues.first { $0.field == "services[1].exec[0]" })
        #expect(issue.reason.contains("does not exist"))
        #expect(issue.file == fixture.manifestPath)
        #expect(issue.line == 17)
    }

    @Test("exec[0] must be executable")
    func execNotExecutable() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: fixture.rootfs + "/bin/db")
        let issues = try Self.issues(fixture)
        #expect(issues.contains { $0.field == "services[1].exec[0]" && $0.reason.contains("not executable") })
    }

    @Test("exec[0] through a symlink that leaves the module is refused")
    func execThroughEscapingLink() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        try FileManager.default.removeItem(atPath: fixture.rootfs + "/bin/db")
        try fixture.symlink("/bin/db", to: "../../../../usr/bin/env")
        let issues = try Self.issues(fixture)
        #expect(issues.contains { $0.field == "/bin/db" && $0.reason.contains("leads outside the module") })
        #expect(issues.contains { $0.field == "services[1].exec[0]" && $0.reason.contains("outside the module") })
    }

    @Test("symlinks escaping the root are refused, also through other symlinks")
    func escapingSymlinks() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        try fixture.symlink("/share/up", to: "../..")
        try fixture.symlink("/share/abs", to: "/etc/passwd")
        // Each link alone stays inside lexically, but /self is the root, so self/.. is the root's parent.
        try fixture.symlink("/self", to: ".")
        try fixture.symlink("/share/sneaky", to: "../self/..")
        try fixture.symlink("/share/fine", to: "../etc/shop/config.toml")
        try fixture.symlink("/share/dangling", to: "missing/../../..")
        let issues = try Self.issues(fixture)
        let fields = Set(issues.map(\.field))
        #expect(fields.contains("/share/up"))
        #expect(issues.contains { $0.field == "/share/abs" && $0.reason.contains("absolute") })
        #expect(fields.contains("/share/sneaky"))
        #expect(!fields.contains("/share/fine"))
        #expect(!fields.contains("/self"))
        #expect(!fields.contains("/share/dangling"))  // the kernel stops at "missing": ENOENT, nothing escapes
        #expect(issues.allSatisfy { $0.file == fixture.rootfs || $0.file == fixture.manifestPath })
    }

    @Test("a symlink loop is refused")
    func symlinkLoop() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        try fixture.symlink("/loop-a", to: "loop-b")
        try fixture.symlink("/loop-b", to: "loop-a")
        let issues = try Self.issues(fixture)
        #expect(issues.contains { $0.field == "/loop-a" && $0.reason == "symlink loop" })
    }

    @Test("a FIFO is refused")
    func fifo() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        #expect(mkfifo(fixture.rootfs + "/share/pipe", 0o644) == 0)
        let issues = try Self.issues(fixture)
        #expect(issues.contains { $0.field == "/share/pipe" && $0.reason.contains("FIFO") })
    }

    @Test("a device node is refused", .requiresRoot)
    func deviceNode() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        // 1:3 is /dev/null.
        #expect(try ModuleFixture.shell("mknod \(fixture.rootfs)/null c 1 3").status == 0)
        let issues = try Self.issues(fixture)
        #expect(issues.contains { $0.field == "/null" && $0.reason.contains("character device") })
    }

    @Test("manifest and tree problems are reported together")
    func together() throws {
        let fixture = try ModuleFixture.standard()
        defer { fixture.remove() }
        try fixture.writeManifest(
            ModuleFixture.twoServiceManifest.replacingOccurrences(of: "name: db", with: "name: DB"))
        try fixture.symlink("/share/abs", to: "/etc/passwd")
        let issues = try Self.issues(fixture)
        #expect(issues.contains { $0.field == "services[1].name" })
        #expect(issues.contains { $0.field == "/share/abs" })
    }

    @Test("a missing module.yaml or rootfs/ is a clear error")
    func missingParts() throws {
        let fixture = try ModuleFixture()
        defer { fixture.remove() }
        let noManifest = #expect(throws: MusterError.self) {
            try ModuleBuilder.load(moduleDirectory: fixture.directory)
        }
        #expect(noManifest?.code == .notFound)
        try fixture.writeManifest("name: a\nversion: 1\n")
        try FileManager.default.removeItem(atPath: fixture.rootfs)
        let noRootfs = #expect(throws: MusterError.self) { try ModuleBuilder.load(moduleDirectory: fixture.directory) }
        #expect(noRootfs?.message.contains("rootfs") == true)
    }
}
