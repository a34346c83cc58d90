import Crypto
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

/// Attach, reattach and detach of real module images (built by the real ``ModuleBuilder``, mounted with the
/// kernel's erofs + overlayfs as `.mount` units) on a real systemd system manager as PID 1 of its own namespaces
/// (``SystemNode``), over its system bus.
@Suite("module attacher on a system manager node", .serialized, .requiresRoot, .requiresSystemd)
struct ModuleAttacherTests {
    /// Runs `body` with a fresh fixture and node; the module is detached and everything removed afterwards, also
    /// when the test fails.
    static func withNode(
        _ body: (ModuleAttachFixture, SystemNode, ModuleAttacher) async throws -> Void
    ) async throws {
        let fixture = try ModuleAttachFixture()
        defer { fixture.remove() }
        try await SystemNode.with { node in
            let attacher = try await fixture.attacher(node: node)
            do {
                try await body(fixture, node, attacher)
            } catch {
                _ = try? await attacher.detach(module: "shop")
                throw error
            }
            _ = try? await attacher.detach(module: "shop")
        }
    }

    static func state(_ report: ModuleAttacher.AttachReport, _ unit: String) -> ModuleAttacher.UnitReport? {
        report.units.first { $0.name == unit }
    }

    @Test(
        "attach starts both services, attaching again is a no-op, reattach restarts only the changed service, detach leaves nothing"
    )
    func lifecycle() async throws {
        try await Self.withNode { fixture, node, attacher in
            let v1 = try await fixture.build(version: "1.0.0", dbTag: "v1")
            let v1Digest = try fixture.store.install(bundle: v1).payload.image.digest
            let mountPrefix = fixture.store.mountsDirectory

            let attached = try await attacher.attach(imageDigest: v1Digest)
            #expect(attached.outcome == .attached)
            #expect(attached.units.map(\.name) == ["muster-shop-api.service", "muster-shop-db.service"])
            #expect(
                attached.units.allSatisfy { $0.activeState == "active" && $0.mainPID > 0 && $0.action == "started" })
            #expect(try node.mountPoints(under: mountPrefix).count == 2)

            // The api service is Type=notify with a watchdog; its environment came through quoting intact.
            let api = try await attacher.manager.state(of: try UnitName("muster-shop-api.service"))
            #expect(api.subState == "running")
            let apiLog = try String(contentsOfFile: "\(fixture.logs)/muster-shop-api.service.log", encoding: .utf8)
            #expect(apiLog.contains("GREETING=hello $USER 100%"), "log: \(apiLog)")
            // The db service runs from the mounted module tree.
            let dbLog = try String(contentsOfFile: "\(fixture.logs)/muster-shop-db.service.log", encoding: .utf8)
            #expect(dbLog.contains("db v1 in \(fixture.store.currentDirectory)/shop"), "log: \(dbLog)")

            // Every generated unit (services and mounts) passes systemd-analyze verify without output.
            let unitFiles = try FileManager.default.contentsOfDirectory(atPath: node.unitDirectory)
                .filter { $0.hasPrefix("muster-") || $0.hasSuffix(".mount") }.map { "\(node.unitDirectory)/\($0)" }
            #expect(unitFiles.count == 4)
            let verify = try node.verifyUnits(unitFiles)
            #expect(verify.status == 0 && verify.stderr.isEmpty, "systemd-analyze verify: \(verify.stderr)")

            // The health report's view.
            let statuses = await attacher.attachedUnits()
            #expect(statuses.map(\.name) == ["muster-shop-api.service", "muster-shop-db.service"])
            #expect(statuses.allSatisfy { $0.module == "shop" && $0.activeState == "active" && $0.mainPID > 0 })
            #expect(statuses.allSatisfy { $0.subState == "running" && $0.nRestarts == 0 })
            let health = await HealthCollector(stateDirectory: fixture.base, units: { await attacher.attachedUnits() })
                .report()
            #expect(health.units?.map(\.name) == statuses.map(\.name))

            // A restarted agent (a new attacher on the same store) knows what is attached; after a "reboot" (units
            // and mounts stopped) it brings the module back.
            let restarted = try await fixture.attacher(node: node)
            #expect(await restarted.attachedUnits().map(\.mainPID) == statuses.map(\.mainPID))
            let loaded = try await restarted.manager.listUnits(matching: ["muster-shop-*", "*.mount"]).map(\.name)
            // Services first, then the module's mounts (overlays before images: "-root" sorts after "-meta").
            let toStop =
                loaded.filter { $0.hasPrefix("muster-shop-") }
                + loaded.filter { $0.contains("muster\\x2dtest") }.sorted(by: >)
            #expect(toStop.count == 4, "\(loaded)")
            for name in toStop { try await restarted.manager.stop(try UnitName(name)) }
            for _ in 0..<250 where try node.mountPoints(under: mountPrefix).count > 0 {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(try node.mountPoints(under: mountPrefix).isEmpty)
            let restored = await restarted.restoreAttached()
            #expect(restored.count == 1)
            let restoredReport = try #require(try restored.first?.result.get())
            #expect(restoredReport.outcome == .unchanged)
            #expect(restoredReport.units.allSatisfy { $0.activeState == "active" && $0.action == "started" })
            #expect(try node.mountPoints(under: mountPrefix).count == 2)
            let afterRestore = try await attacher.attach(imageDigest: v1Digest)

            // Attaching the same version again changes nothing.
            let again = try await attacher.attach(imageDigest: v1Digest)
            #expect(again.outcome == .unchanged)
            #expect(again.units.map(\.mainPID) == afterRestore.units.map(\.mainPID))
            #expect(again.units.allSatisfy { $0.action == "unchanged" })
            #expect(again.hashedFiles == 0, "an already verified version is not hashed again")

            // v2 changes one file of the db service: only db restarts, api keeps its process.
            let v2 = try await fixture.build(version: "1.1.0", dbTag: "v2")
            let v2Digest = try fixture.store.install(bundle: v2).payload.image.digest
            let reattached = try await attacher.attach(imageDigest: v2Digest)
            #expect(reattached.outcome == .reattached)
            #expect(reattached.previousImageDigest == v1Digest)
            let apiAfter = try #require(Self.state(reattached, "muster-shop-api.service"))
            let dbAfter = try #require(Self.state(reattached, "muster-shop-db.service"))
            #expect(apiAfter.action == "unchanged")
            #expect(apiAfter.mainPID == Self.state(afterRestore, "muster-shop-api.service")?.mainPID)
            #expect(dbAfter.action == "restarted")
            #expect(dbAfter.mainPID != Self.state(afterRestore, "muster-shop-db.service")?.mainPID)
            #expect(dbAfter.activeState == "active")
            let dbLog2 = try String(contentsOfFile: "\(fixture.logs)/muster-shop-db.service.log", encoding: .utf8)
            #expect(dbLog2.contains("db v2 in"), "log: \(dbLog2)")
            // The old version is unmounted, only the new one's two mounts are left.
            let mounts = try node.mountPoints(under: mountPrefix)
            #expect(mounts.count == 2 && mounts.allSatisfy { $0.contains(String(v2Digest.prefix(16))) }, "\(mounts)")

            // Detach: no units, no mounts, no objects, images or descriptors, no record.
            let detached = try await attacher.detach(module: "shop")
            #expect(detached.wasAttached)
            #expect(detached.removedUnits == ["muster-shop-api.service", "muster-shop-db.service"])
            #expect(detached.collectedImages.sorted() == [v1Digest, v2Digest].sorted())
            let left = try FileManager.default.contentsOfDirectory(atPath: node.unitDirectory)
                .filter { $0.hasPrefix("muster-") || $0.hasSuffix(".mount") }
            #expect(left.isEmpty, "\(left)")
            #expect(try node.mountPoints(under: mountPrefix).isEmpty)
            #expect(ModuleAttachFixture.files(under: fixture.store.objects.path).isEmpty)
            #expect(ModuleAttachFixture.files(under: fixture.store.imagesDirectory).isEmpty)
            #expect(ModuleAttachFixture.files(under: fixture.store.descriptorsDirectory).isEmpty)
            #expect(try attacher.attachedModules().isEmpty)
            let gone = try await attacher.manager.state(of: try UnitName("muster-shop-api.service"))
            #expect(gone.loadState == "not-found")
            #expect(await attacher.attachedUnits().isEmpty)

            // Detaching again (or a module never attached) is a no-op success.
            let twice = try await attacher.detach(module: "shop")
            #expect(!twice.wasAttached && twice.removedUnits.isEmpty)
            #expect(!(try await attacher.detach(module: "never")).wasAttached)
        }
    }

    static var agentExecutable: String {
        if let dir = ProcessInfo.processInfo.environment["MUSTER_BIN_DIR"], !dir.isEmpty {
            return "\(dir)/muster-agent"
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return "\((exe as NSString).deletingLastPathComponent)/muster-agent"
    }

    @Test("the muster-agent binary inside the node: module install, attach, status and detach over the node's bus")
    func agentCommandInsideNode() async throws {
        let agent = Self.agentExecutable
        try #require(FileManager.default.isExecutableFile(atPath: agent), "\(agent) missing: swift build first")
        try await Self.withNode { fixture, node, attacher in
            let bundle = try await fixture.build(version: "1.0.0")
            let key = "\(fixture.base)/module-signing.pub"
            try TrustedModuleKeys.pem(ModuleAttachFixture.signer.publicKey).write(
                toFile: key, atomically: true, encoding: .utf8)
            let state = (fixture.store.root as NSString).deletingLastPathComponent
            // Inside the node's mount and PID namespaces, as the agent runs in production: its /run holds the
            // node's system bus, which sd_bus_open_system finds at the default address.
            func agentInNode(_ arguments: [String]) throws -> [String: Any] {
                let run = try runCommand(
                    "/usr/bin/nsenter",
                    ["-t", "\(try node.initPID())", "-m", "-p", agent, "module"] + arguments + [
                        "--state-dir", state, "--log-level", "warning",
                    ])
                #expect(run.status == 0, "muster-agent module \(arguments): \(run.stderr)")
                let json = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8), options: [.fragmentsAllowed])
                if let object = json as? [String: Any] { return object }
                return ["list": json]
            }
            let installed = try agentInNode(["install", bundle.directory])
            let digest = try #require(installed["imageDigest"] as? String)
            let moduleOptions = ["--unit-dir", node.unitDirectory, "--module-key", key]
            let attached = try agentInNode(["attach", digest] + moduleOptions)
            #expect(attached["outcome"] as? String == "attached")
            let units = try #require(attached["units"] as? [[String: Any]])
            #expect(units.compactMap { $0["activeState"] as? String } == ["active", "active"])
            let status = try #require(try agentInNode(["status"] + moduleOptions)["list"] as? [[String: Any]])
            #expect(
                status.compactMap { $0["name"] as? String } == ["muster-shop-api.service", "muster-shop-db.service"])
            #expect(status.allSatisfy { ($0["mainPID"] as? Int ?? 0) > 0 })
            // The test's own attacher (same store and unit directory) sees the same.
            #expect(
                await attacher.attachedUnits().map(\.name) == ["muster-shop-api.service", "muster-shop-db.service"])
            let detached = try agentInNode(["detach", "shop"] + moduleOptions)
            #expect(detached["wasAttached"] as? Bool == true)
            #expect(try node.mountPoints(under: fixture.store.mountsDirectory).isEmpty)
        }
    }

    @Test("a tampered object is refused before anything is mounted, also after the version was verified once")
    func tamperedObject() async throws {
        try await Self.withNode { fixture, node, attacher in
            let bundle = try await fixture.build(version: "1.0.0")
            let descriptor = try fixture.store.install(bundle: bundle)
            let digest = descriptor.payload.image.digest
            // The db script's object.
            let dbObject = try #require(
                descriptor.payload.objects.first { object in
                    (try? String(contentsOfFile: fixture.store.objects.path(of: object.digest), encoding: .utf8))?
                        .contains("echo \"db v1") == true
                })
            let path = fixture.store.objects.path(of: dbObject.digest)
            let original = try String(contentsOfFile: path, encoding: .utf8)
            func tamper(_ text: String) throws {
                chmod(path, 0o644)
                try text.write(toFile: path, atomically: false, encoding: .utf8)
                chmod(path, 0o444)
            }
            // Same size, other content.
            try tamper(original.replacingOccurrences(of: "v1", with: "XX"))
            let error = await #expect(throws: MusterError.self) { try await attacher.attach(imageDigest: digest) }
            #expect(error?.code == .digestMismatch)
            #expect(error?.message.contains(dbObject.digest) == true, "\(String(describing: error))")
            #expect(try node.mountPoints(under: fixture.store.mountsDirectory).isEmpty)
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: node.unitDirectory).filter {
                    $0.hasSuffix(".mount") || $0.hasPrefix("muster-")
                }.isEmpty)

            // Restored, the version verifies (and is remembered: verifying again hashes nothing); changed again in
            // place, the cache notices the changed file and attach refuses it again.
            try tamper(original)
            let verifier = ModuleVerifier(store: fixture.store, trustedKeys: [ModuleAttachFixture.signer.publicKey])
            // The refused attach remembered the files it had checked before the tampered one; the restored object
            // is hashed again.
            #expect(try verifier.verify(imageDigest: digest).hashed >= 1)
            #expect(try verifier.verify(imageDigest: digest).hashed == 0)
            try tamper(original.replacingOccurrences(of: "v1", with: "YY"))
            let again = await #expect(throws: MusterError.self) { try await attacher.attach(imageDigest: digest) }
            #expect(again?.code == .digestMismatch)
            #expect(try node.mountPoints(under: fixture.store.mountsDirectory).isEmpty)

            // A missing object is reported as missing (to be fetched again), before any mount.
            unlink(path)
            let missing = await #expect(throws: MusterError.self) { try await attacher.attach(imageDigest: digest) }
            #expect(missing?.code == .notFound)
            #expect(missing?.message.contains("1 of") == true, "\(String(describing: missing))")
        }
    }

    @Test("a signed manifest with a unit-file injection is refused with the field named, before any mount")
    func signedInjection() async throws {
        try await Self.withNode { fixture, node, attacher in
            let descriptor = try fixture.store.install(bundle: try await fixture.build(version: "1.0.0"))
            var payload = descriptor.payload
            payload.manifest.services[0].environment["MODE"] = "x\nExecStartPre=/bin/touch /tmp/pwned"
            // Signed with the trusted key: only the manifest rules stand between this value and a unit file.
            let forged = try ModuleAttachFixture.signer.sign(payload)
            let path = fixture.store.descriptorPath(payload.image.digest)
            chmod(path, 0o644)
            try forged.encoded().write(to: URL(fileURLWithPath: path))
            let error = await #expect(throws: MusterError.self) {
                try await attacher.attach(imageDigest: payload.image.digest)
            }
            #expect(error?.code == .invalidInput)
            #expect(error?.message.contains("services[0].env.MODE") == true, "\(String(describing: error))")
            #expect(try node.mountPoints(under: fixture.store.mountsDirectory).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: "\(node.unitDirectory)/muster-shop-api.service"))
        }
    }

    @Test("a module signed by an unknown key is refused")
    func unknownKey() async throws {
        try await Self.withNode { fixture, node, _ in
            let digest = try fixture.store.install(bundle: try await fixture.build(version: "1.0.0")).payload.image
                .digest
            let stranger = try await fixture.attacher(
                node: node, trustedKeys: [.init(rawRepresentation: Data(repeating: 7, count: 32))])
            let error = await #expect(throws: MusterError.self) { try await stranger.attach(imageDigest: digest) }
            #expect(error?.code == .verificationFailed)
            #expect(try node.mountPoints(under: fixture.store.mountsDirectory).isEmpty)
        }
    }

    @Test("a service that exits at once fails the attach with systemd's Result and its last log lines")
    func failingService() async throws {
        try await Self.withNode { fixture, node, attacher in
            let manifest = ModuleAttachFixture.manifest.replacingOccurrences(
                of: "exec: [/bin/db, --data, /share/db]", with: "exec: [/bin/crash]")
            let bundle = try await fixture.build(
                version: "1.0.0", manifest: manifest,
                extra: ["/bin/crash": "#!/bin/sh\necho 'crash: cannot open the database' >&2\nexit 3\n"])
            let digest = try fixture.store.install(bundle: bundle).payload.image.digest
            let error = await #expect(throws: MusterError.self) { try await attacher.attach(imageDigest: digest) }
            #expect(error?.code == .unitFailed)
            let message = error?.message ?? ""
            #expect(message.contains("muster-shop-db.service failed: Result=exit-code"), "\(message)")
            #expect(message.contains("exit status 3"), "\(message)")
            #expect(message.contains("crash: cannot open the database"), "\(message)")
            // Still recorded as attached: detach cleans up the failed module completely.
            #expect(try attacher.attachedModules().map(\.module) == ["shop"])
            let detached = try await attacher.detach(module: "shop")
            #expect(detached.removedUnits.count == 2)
            #expect(try node.mountPoints(under: fixture.store.mountsDirectory).isEmpty)
        }
    }

    @Test("a failed reattach keeps the unchanged service running and the old tree mounted; the next version cleans up")
    func failedReattach() async throws {
        try await Self.withNode { fixture, node, attacher in
            let v1 = try fixture.store.install(bundle: try await fixture.build(version: "1.0.0", dbTag: "v1"))
            let attached = try await attacher.attach(imageDigest: v1.payload.image.digest)
            let broken = try fixture.store.install(
                bundle: try await fixture.build(
                    version: "2.0.0", extra: ["/bin/db": "#!/bin/sh\necho 'db: broken build' >&2\nexit 1\n"]))
            let error = await #expect(throws: MusterError.self) {
                try await attacher.attach(imageDigest: broken.payload.image.digest)
            }
            #expect(error?.code == .unitFailed)
            #expect(error?.message.contains("db: broken build") == true, "\(String(describing: error))")
            let api = try await attacher.manager.state(of: try UnitName("muster-shop-api.service"))
            #expect(api.activeState == "active")
            #expect(api.mainPID == Self.state(attached, "muster-shop-api.service")?.mainPID)
            #expect(try node.mountPoints(under: fixture.store.mountsDirectory).count == 4, "both versions mounted")
            #expect(try attacher.attachedModules().first?.imageDigest == broken.payload.image.digest)

            let v3 = try fixture.store.install(bundle: try await fixture.build(version: "3.0.0", dbTag: "v3"))
            let fixed = try await attacher.attach(imageDigest: v3.payload.image.digest)
            #expect(fixed.outcome == .reattached)
            #expect(fixed.units.allSatisfy { $0.activeState == "active" })
            #expect(Self.state(fixed, "muster-shop-db.service")?.action == "restarted")
            #expect(Self.state(fixed, "muster-shop-api.service")?.action == "unchanged")
            let mounts = try node.mountPoints(under: fixture.store.mountsDirectory)
            #expect(
                mounts.count == 2 && mounts.allSatisfy { $0.contains(String(v3.payload.image.digest.prefix(16))) },
                "\(mounts)")
        }
    }

    @Test("a unit file with our name that is not ours is refused and never overwritten; nothing is mounted")
    func foreignUnit() async throws {
        try await Self.withNode { fixture, node, attacher in
            let digest = try fixture.store.install(bundle: try await fixture.build(version: "1.0.0")).payload.image
                .digest
            let foreign = "\(node.unitDirectory)/muster-shop-db.service"
            let text = "[Service]\nExecStart=/bin/sleep 1000\n"
            try text.write(toFile: foreign, atomically: true, encoding: .utf8)
            let error = await #expect(throws: MusterError.self) { try await attacher.attach(imageDigest: digest) }
            #expect(error?.code == .conflict)
            #expect(error?.message.contains(foreign) == true, "\(String(describing: error))")
            #expect(try String(contentsOfFile: foreign, encoding: .utf8) == text)
            #expect(try node.mountPoints(under: fixture.store.mountsDirectory).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: "\(node.unitDirectory)/muster-shop-api.service"))
            // Detach of the module (never attached) leaves the foreign file alone.
            #expect(!(try await attacher.detach(module: "shop")).wasAttached)
            #expect(FileManager.default.fileExists(atPath: foreign))
        }
    }
}

/// The store without systemd: installing bundles, missing objects, garbage collection, and the kernel fact attach
/// relies on (no fs-verity).
@Suite("node module store", .serialized, .requiresRoot)
struct NodeModuleStoreTests {
    @Test(
        "install stores shared objects once, read-only; missingObjects and garbage collection keep what is referenced")
    func installAndCollect() async throws {
        let fixture = try ModuleAttachFixture()
        defer { fixture.remove() }
        let store = fixture.store
        let v1 = try store.install(bundle: try await fixture.build(version: "1.0.0", dbTag: "v1")).payload
        let v2 = try store.install(bundle: try await fixture.build(version: "1.1.0", dbTag: "v2")).payload
        let all = Set(v1.objects.map(\.digest)).union(v2.objects.map(\.digest))
        #expect(ModuleAttachFixture.files(under: store.objects.path).count == all.count)
        #expect(all.count == v1.objects.count + 1, "v2 shares all objects but the db script")
        for digest in all { #expect(FileStatus.lstat(store.objects.path(of: digest))?.permissions == 0o444) }
        #expect(FileStatus.lstat(store.imagePath(v1.image.digest))?.permissions == 0o444)
        #expect(store.missingObjects(of: v1).isEmpty)
        #expect(store.storedImages() == [v1.image.digest, v2.image.digest].sorted())

        let removedObject = try #require(v1.objects.first)
        unlink(store.objects.path(of: removedObject.digest))
        #expect(store.missingObjects(of: v1) == [removedObject])
        try store.install(bundle: ModuleBundle(directory: "\(fixture.base)/out-1.0.0"))
        #expect(store.missingObjects(of: v1).isEmpty, "install fetches only what is missing")

        // A temporary file of a writer in progress survives collection.
        let temporary = "\(store.objects.path)/.tmp-in-progress"
        try "partial".write(toFile: temporary, atomically: false, encoding: .utf8)
        let collected = try store.garbageCollect(keeping: [v2.image.digest])
        #expect(collected.images == [v1.image.digest])
        #expect(collected.objects == 1, "only v1's db script is not referenced by v2")
        #expect(store.missingObjects(of: v2).isEmpty)
        #expect(store.storedImages() == [v2.image.digest])
        #expect(FileManager.default.fileExists(atPath: temporary))
        #expect(!FileManager.default.fileExists(atPath: store.imagePath(v1.image.digest)))
        let none = try store.garbageCollect(keeping: [])
        #expect(none.objects == v2.objects.count)
        #expect(ModuleAttachFixture.files(under: store.objects.path) == [".tmp-in-progress"])
    }

    @Test("install refuses a bundle whose object does not match its name and leaves no file under that name")
    func installTampered() async throws {
        let fixture = try ModuleAttachFixture()
        defer { fixture.remove() }
        let bundle = try await fixture.build(version: "1.0.0")
        let object = try #require(try bundle.loadDescriptor().payload.objects.first)
        let path = bundle.objects.path(of: object.digest)
        chmod(path, 0o644)
        try "changed".write(toFile: path, atomically: false, encoding: .utf8)
        let error = #expect(throws: MusterError.self) { try fixture.store.install(bundle: bundle) }
        #expect(error?.code == .digestMismatch)
        #expect(FileStatus.lstat(fixture.store.objects.path(of: object.digest)) == nil)
    }

    @Test("a full disk while installing fails cleanly: no partial object under its name, no temporary left")
    func diskFull() async throws {
        let fixture = try ModuleAttachFixture()
        defer { fixture.remove() }
        let bundle = try await fixture.build(
            version: "1.0.0", extra: ["/share/big.bin": String(repeating: "0123456789abcdef", count: 16_384)])
        let store = NodeModuleStore(root: "\(fixture.base)/small")
        try FileManager.default.createDirectory(atPath: store.root, withIntermediateDirectories: true)
        // 128 KiB of tmpfs: the small objects fit, the 256 KiB one does not.
        #expect(mount("tmpfs", store.root, "tmpfs", 0, "size=128k") == 0, "mount tmpfs: \(errno)")
        defer { umount2(store.root, Int32(MNT_DETACH)) }
        let error = #expect(throws: MusterError.self) { try store.install(bundle: bundle) }
        #expect(error?.code == .io)
        #expect(error?.message.contains("No space left on device") == true, "\(String(describing: error))")
        let payload = try bundle.loadDescriptor().payload
        for path in ModuleAttachFixture.files(under: store.objects.path) {
            #expect(!(path as NSString).lastPathComponent.hasPrefix("."), "temporary left: \(path)")
            let digest = path.replacingOccurrences(of: "/", with: "")
            #expect(try ContentDigest.sha256(ofFileAt: "\(store.objects.path)/\(path)")?.digest == digest)
        }
        #expect(store.missingObjects(of: payload).contains { $0.size == 262_144 }, "the big object is not stored")
    }

    /// This kernel has no fs-verity (TESTING.md): overlay's `verity=require` must fail closed — every redirected
    /// file gives EIO — which is why attach checks objects in user space. If this starts passing reads, the kernel
    /// changed: put fs-verity digests into the images and mount with `verity=require`.
    @Test("verity=require on a stored image fails closed with EIO on this kernel")
    func verityRequireFailsClosed() async throws {
        let fixture = try ModuleAttachFixture()
        defer { fixture.remove() }
        let payload = try fixture.store.install(bundle: try await fixture.build(version: "1.0.0")).payload
        let meta = "\(fixture.base)/verity-meta"
        let target = "\(fixture.base)/verity-root"
        try FileManager.default.createDirectory(atPath: meta, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let script = """
            set -e
            mount -t erofs -o ro '\(fixture.store.imagePath(payload.image.digest))' '\(meta)'
            mount -t overlay overlay -o 'ro,lowerdir=\(meta)::\(fixture.store.objects.path),metacopy=on,redirect_dir=follow,verity=require' '\(target)'
            cat '\(target)/etc/shop/config.toml'
            """
        let run = try runCommand("/usr/bin/unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", script])
        #expect(run.status != 0)
        #expect(run.stderr.contains("Input/output error"), "stderr: \(run.stderr)")
        #expect(!run.stdout.contains("port = 8080"))
    }
}
