import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Agent
@testable import Coordinator

#if canImport(Glibc)
    import Glibc
#endif

/// `--systemd user`: a user manager cannot run `.mount` units, so the agent mounts the module itself
/// (``DirectMounter``) in the manager's mount namespace, and writes user-scope units.
@Suite("module attacher on a user manager", .serialized, .requiresRoot, .requiresSystemd)
struct ModuleAttacherUserManagerTests {
    static func mountPoints(_ manager: UserManager, under prefix: String) throws -> [String] {
        try DirectMounter(namespacePID: manager.pid).mountPoints(under: prefix).sorted()
    }

    @Test("attach, reattach and detach with the agent's own mounts inside the user manager's mount namespace")
    func lifecycle() async throws {
        let fixture = try ModuleAttachFixture()
        defer { fixture.remove() }
        try await UserManager.with { manager in
            var configuration = ModuleAttacher.Configuration()
            configuration.scope = .user
            configuration.managerRoot = "/proc/\(manager.pid)/root"
            configuration.mounts = .direct(namespacePID: manager.pid)
            configuration.output = .files(directory: fixture.logs)
            let attacher = ModuleAttacher(
                store: fixture.store, manager: try await SystemdManager.connect(manager.busAddress),
                unitDirectory: manager.unitDirectory, trustedKeys: [ModuleAttachFixture.signer.publicKey],
                configuration: configuration, logger: Logger(label: "test"))
            let prefix = fixture.store.mountsDirectory
            do {
                let v1 = try fixture.store.install(bundle: try await fixture.build(version: "1.0.0", dbTag: "v1"))
                let attached = try await attacher.attach(imageDigest: v1.payload.image.digest)
                #expect(attached.units.count == 2)
                #expect(attached.units.allSatisfy { $0.activeState == "active" && $0.mainPID > 0 })
                #expect(try Self.mountPoints(manager, under: prefix).count == 2)
                #expect(try DirectMounter(namespacePID: nil).mountPoints(under: prefix).isEmpty, "not on the host")
                let unit = try String(
                    contentsOfFile: "\(manager.unitDirectory)/muster-shop-api.service", encoding: .utf8)
                #expect(unit.contains("(user manager)"), "user-scope sandbox profile")
                // systemd-analyze --user verify, in the manager's mount namespace (where ExecStart= resolves).
                let files = ["api", "db"].map { "\(manager.unitDirectory)/muster-shop-\($0).service" }
                let verify = try runCommand(
                    "/usr/bin/nsenter",
                    ["-t", "\(manager.pid)", "-m", "/usr/bin/systemd-analyze", "--user", "verify", "--man=no"] + files,
                    environment: ["XDG_RUNTIME_DIR": manager.runtimeDirectory])
                #expect(verify.status == 0 && verify.stderr.isEmpty, "systemd-analyze verify: \(verify.stderr)")

                let v2 = try fixture.store.install(bundle: try await fixture.build(version: "1.1.0", dbTag: "v2"))
                let reattached = try await attacher.attach(imageDigest: v2.payload.image.digest)
                #expect(reattached.units.map(\.action) == ["unchanged", "restarted"])
                let mounts = try Self.mountPoints(manager, under: prefix)
                #expect(
                    mounts.count == 2 && mounts.allSatisfy { $0.contains(String(v2.payload.image.digest.prefix(16))) },
                    "\(mounts)")

                let detached = try await attacher.detach(module: "shop")
                #expect(detached.unmounted.count == 2)
                #expect(try Self.mountPoints(manager, under: prefix).isEmpty)
                #expect(ModuleAttachFixture.files(under: fixture.store.objects.path).isEmpty)
                #expect(!FileManager.default.fileExists(atPath: "\(manager.unitDirectory)/muster-shop-api.service"))
            } catch {
                _ = try? await attacher.detach(module: "shop")
                throw error
            }
        }
    }
}
