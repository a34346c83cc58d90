import Crypto
import Foundation
import Logging
import NIOCore
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Agent
@testable import Coordinator

/// Module transfer in one process: the real listener serving a real module repository over mutual TLS, the real
/// agent session, task runner, object transport and fetcher, tasks through the real dispatcher on PostgreSQL.
/// Modules are built with the real builder (mkfs.erofs, trusted xattrs), so these tests need root.
@Suite("Modules: transfer over the agent channel (real TLS + PostgreSQL; attachModule's fetch step only, no systemd in-process)", .serialized)
struct ModuleTransferTests {
    /// Runs a joined agent as `muster-agent run` assembles it (task runner, session, object transport).
    static func withAgent(
        _ fx: ChannelFixture, stateDirectory: String,
        _ body: @Sendable (CoordinatorSession, TaskRunner, ObjectTransport) async throws -> Void
    ) async throws {
        let objects = ObjectTransport()
        let runner = try AgentServices.makeTaskRunner(
            configuration: AgentConfiguration(stateDirectory: stateDirectory), objects: objects, moduleStep: .fetchOnly,
            logger: fx.logger)
        let session = CoordinatorSession(
            configuration: .init(
                stateDirectory: stateDirectory, backoff: Backoff(base: .milliseconds(50), cap: .milliseconds(200))),
            tasks: runner, objects: objects, logger: fx.logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runner.run() }
            group.addTask { try await session.run() }
            defer { group.cancelAll() }
            try await ChannelFixture.eventually("the agent's session is established") { session.status.connected }
            try await body(session, runner, objects)
        }
    }

    /// Creates an attachModule task and waits until it finished.
    static func attach(
        _ fx: ChannelFixture, node: UUID, _ payload: ModuleDescriptor.Payload, maxAttempts: Int = 1
    ) async throws -> TaskRecord {
        let spec = try JSONValue(
            encoding: AttachModuleSpec(
                name: payload.manifest.name, version: payload.manifest.version, imageDigest: payload.image.digest))
        let task = try await fx.tasks.create(
            nodeID: node, kind: .attachModule, spec: spec, maxAttempts: maxAttempts, now: fx.clock.now, actor: "test")
        await fx.dispatcher.dispatch(nodeID: node)
        return try await TaskTests.waitForState(fx, task.id, [.succeeded, .failed], "the attach task finished")
    }

    static func fetchReport(_ task: TaskRecord) throws -> ModuleFetcher.Report {
        try #require(try task.result?.decode(AttachModuleHandler.Result.self)).fetch
    }

    static func descriptorSize(_ bundle: ModuleBundle) throws -> UInt64 {
        UInt64(try Data(contentsOf: URL(fileURLWithPath: bundle.descriptorPath)).count)
    }

    /// The node's image and descriptor of a version are byte for byte the published ones.
    static func expectStoredAsPublished(
        _ bundle: ModuleBundle, _ payload: ModuleDescriptor.Payload, layout: ModuleFetcher.Layout
    ) throws {
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: layout.imagePath(payload.image.digest)))
                == Data(contentsOf: URL(fileURLWithPath: bundle.imagePath)))
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: layout.descriptorPath(payload.image.digest)))
                == Data(contentsOf: URL(fileURLWithPath: bundle.descriptorPath)))
        #expect(SecureFile.mode(of: layout.imagePath(payload.image.digest)).map { $0 & 0o777 } == 0o444)
    }

    /// Two versions of a module of `count` small files; the second rewrites `changed` of them (same sizes).
    static func twoVersions(
        _ fx: ChannelFixture, name: String, count: Int, changed: Set<Int>
    ) async throws -> (ModuleBundle, ModuleBundle) {
        func files(rewritten: Set<Int>) -> [String: [UInt8]] {
            var out: [String: [UInt8]] = [:]
            for index in 0..<count {
                let size = 1000 + (index * 7919) % 30_000
                let seed = UInt64(100 + index) + (rewritten.contains(index) ? 1_000_000 : 0)
                out["/data/\(index % 8)/f\(index).bin"] = ModuleKit.bytes(size, seed: seed)
            }
            return out
        }
        let key = fx.authority.moduleSigningKey
        let first = try await ModuleKit.build(
            name: name, version: "1.0.0", files: files(rewritten: []), key: key, base: fx.directory)
        let second = try await ModuleKit.build(
            name: name, version: "1.0.1", files: files(rewritten: changed), key: key, base: fx.directory)
        return (first, second)
    }

    // MARK: - Tests

    @Test(.requiresRoot)
    func aNewVersionsImageAndDescriptorTravelAsSmallDeltas() async throws {
        try await ChannelFixture.with { fx in
            let (v1, v2) = try await Self.twoVersions(fx, name: "shop", count: 300, changed: [5, 150, 299])
            let a = try await ModuleKit.install(v1, into: fx.modules)
            let b = try await ModuleKit.install(v2, into: fx.modules)
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            let layout = ModuleFetcher.Layout(stateDirectory: stateDirectory)
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, _, _ in
                let first = try await Self.attach(fx, node: identity.nodeID, a)
                #expect(first.state == .succeeded, "\(String(describing: first.error))")
                let firstReport = try Self.fetchReport(first)
                #expect(firstReport.deltaBase == nil && firstReport.imageDeltaBytes == nil)

                let second = try await Self.attach(fx, node: identity.nodeID, b)
                #expect(second.state == .succeeded, "\(String(describing: second.error))")
                let report = try Self.fetchReport(second)
                #expect(report.deltaBase == a.image.digest)
                let imageDelta = try #require(report.imageDeltaBytes)
                let descriptorDelta = try #require(report.descriptorDeltaBytes)
                let descriptorSize = try Self.descriptorSize(v2)
                // Three files of 300 changed: both deltas are a small fraction of the whole files.
                #expect(imageDelta * 10 < b.image.size, "image delta \(imageDelta) of \(b.image.size)")
                #expect(
                    descriptorDelta * 10 < descriptorSize, "descriptor delta \(descriptorDelta) of \(descriptorSize)")
                let changedBytes = b.objects.filter { !a.objects.contains($0) }.reduce(UInt64(0)) { $0 + $1.size }
                #expect(report.bytesReceived == changedBytes + imageDelta + descriptorDelta)
                try Self.expectStoredAsPublished(v2, b, layout: layout)
                #expect(layout.objects.verify(b.objects).isEmpty)
                #expect(ModuleKit.files(under: layout.partialDirectory).isEmpty)
                // The coordinator computed each delta once and keeps it.
                #expect(
                    FileManager.default.fileExists(
                        atPath: fx.modules.deltaPath(.imageDelta, digest: b.image.digest, base: a.image.digest)))
            }
        }
    }

    @Test(.requiresRoot)
    func aBrokenOrUnavailableDeltaFallsBackToTheWholeFile() async throws {
        try await ChannelFixture.with { fx in
            let (v1, v2) = try await Self.twoVersions(fx, name: "shop", count: 100, changed: [3])
            let a = try await ModuleKit.install(v1, into: fx.modules)
            let b = try await ModuleKit.install(v2, into: fx.modules)
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            let layout = ModuleFetcher.Layout(stateDirectory: stateDirectory)
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, _, _ in
                let first = try await Self.attach(fx, node: identity.nodeID, a)
                #expect(first.state == .succeeded, "\(String(describing: first.error))")

                // The image delta the coordinator serves is damaged (a valid delta of another target); the
                // descriptor delta is unavailable (the coordinator lost 1.0.0's descriptor): NOT_FOUND.
                let imageDeltaPath = fx.modules.deltaPath(.imageDelta, digest: b.image.digest, base: a.image.digest)
                try FileManager.default.createDirectory(
                    atPath: fx.modules.deltasDirectory, withIntermediateDirectories: true)
                let baseImage = [UInt8](try Data(contentsOf: URL(fileURLWithPath: v1.imagePath)))
                var wrong = [UInt8](try Data(contentsOf: URL(fileURLWithPath: v2.imagePath)))
                wrong[wrong.count / 2] ^= 0xff
                try Data(BinaryDelta.make(base: baseImage, target: wrong)).write(
                    to: URL(fileURLWithPath: imageDeltaPath))
                #expect(unlink(fx.modules.descriptorPath(a.image.digest)) == 0)

                let second = try await Self.attach(fx, node: identity.nodeID, b)
                #expect(second.state == .succeeded, "\(String(describing: second.error))")
                let report = try Self.fetchReport(second)
                #expect(report.deltaBase == a.image.digest)
                #expect(report.imageDeltaBytes == nil && report.descriptorDeltaBytes == nil)
                let changedBytes = b.objects.filter { !a.objects.contains($0) }.reduce(UInt64(0)) { $0 + $1.size }
                let damagedDelta = UInt64(FileStatus.lstat(imageDeltaPath)?.size ?? 0)
                // Whole image and descriptor, plus the damaged delta that was refused.
                #expect(
                    report.bytesReceived
                        == changedBytes + b.image.size + (try Self.descriptorSize(v2)) + damagedDelta)
                try Self.expectStoredAsPublished(v2, b, layout: layout)
                #expect(ModuleKit.files(under: layout.partialDirectory).isEmpty)
            }
        }
    }

    @Test(.requiresRoot)
    func aSecondModuleFetchesOnlyTheObjectsTheNodeLacks() async throws {
        try await ChannelFixture.with { fx in
            let key = fx.authority.moduleSigningKey
            let shared = ["/data/common-1": ModuleKit.bytes(200_000, seed: 1), "/data/common-2": ModuleKit.bytes(300_000, seed: 2)]
            let alpha = try await ModuleKit.build(
                name: "shop", version: "1.0.0", files: shared.merging(["/data/a": ModuleKit.bytes(100_000, seed: 3)]) { a, _ in a },
                key: key, base: fx.directory)
            let beta = try await ModuleKit.build(
                name: "shop", version: "1.1.0", files: shared.merging(["/data/b": ModuleKit.bytes(150_000, seed: 4)]) { a, _ in a },
                key: key, base: fx.directory)
            let a = try await ModuleKit.install(alpha, into: fx.modules)
            let b = try await ModuleKit.install(beta, into: fx.modules)

            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            // The join response carried the cluster's module key.
            #expect(
                try ModuleKeyFile.load(stateDirectory: stateDirectory).rawRepresentation
                    == key.publicKey.rawRepresentation)
            let layout = ModuleFetcher.Layout(stateDirectory: stateDirectory)
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, _, transport in
                let first = try await Self.attach(fx, node: identity.nodeID, a)
                #expect(first.state == .succeeded, "\(String(describing: first.error))")
                let firstReport = try Self.fetchReport(first)
                #expect(firstReport.fetchedObjects == a.objects.count)
                #expect(firstReport.presentObjects == 0)
                #expect(firstReport.imageFetched && firstReport.descriptorFetched)
                #expect(
                    firstReport.bytesReceived
                        == a.totalObjectBytes + a.image.size + (try Self.descriptorSize(alpha)))
                // Exactly the module's objects, read-only, nothing left in partial/.
                #expect(ModuleKit.files(under: layout.objects.path) == ModuleKit.objectPaths(a.objects))
                for object in a.objects {
                    #expect(SecureFile.mode(of: layout.objects.path(of: object.digest)).map { $0 & 0o777 } == 0o444)
                }
                #expect(layout.objects.verify(a.objects).isEmpty)
                #expect(ModuleKit.files(under: layout.partialDirectory).isEmpty)
                #expect(FileManager.default.fileExists(atPath: layout.descriptorPath(a.image.digest)))
                #expect(FileManager.default.fileExists(atPath: layout.imagePath(a.image.digest)))

                // The new version shares /bin/main and two data files: only its own object travels.
                let received = transport.receivedBytes
                let second = try await Self.attach(fx, node: identity.nodeID, b)
                #expect(second.state == .succeeded, "\(String(describing: second.error))")
                let secondReport = try Self.fetchReport(second)
                let changed = b.objects.filter { !a.objects.contains($0) }
                #expect(changed.count == 1)
                #expect(secondReport.fetchedObjects == changed.count)
                #expect(secondReport.presentObjects == b.objects.count - changed.count)
                let changedBytes = changed.reduce(UInt64(0)) { $0 + $1.size }
                // The image and descriptor travelled as deltas against 1.0.0's.
                #expect(secondReport.deltaBase == a.image.digest)
                let imageDelta = try #require(secondReport.imageDeltaBytes)
                let descriptorDelta = try #require(secondReport.descriptorDeltaBytes)
                #expect(imageDelta < b.image.size)
                #expect(descriptorDelta < (try Self.descriptorSize(beta)))
                let overhead = imageDelta + descriptorDelta
                #expect(secondReport.bytesReceived == changedBytes + overhead)
                #expect(transport.receivedBytes - received == changedBytes + overhead)
                // Object bytes on the wire for the new version are exactly the changed bytes (≤ 1.05 ×).
                #expect(Double(secondReport.bytesReceived - overhead) <= 1.05 * Double(changedBytes))
                try Self.expectStoredAsPublished(beta, b, layout: layout)
                #expect(
                    ModuleKit.files(under: layout.objects.path)
                        == ModuleKit.objectPaths(a.objects).union(ModuleKit.objectPaths(b.objects)))

                // Attaching again transfers nothing.
                let again = try await Self.attach(fx, node: identity.nodeID, a)
                #expect(again.state == .succeeded)
                let againReport = try Self.fetchReport(again)
                #expect(againReport.bytesReceived == 0)
                #expect(againReport.fetchedObjects == 0)
            }
        }
    }

    @Test(.requiresRoot)
    func aTamperedObjectAtTheCoordinatorIsRefusedAndNothingOfItIsStored() async throws {
        try await ChannelFixture.with { fx in
            let bundle = try await ModuleKit.build(
                name: "shop", version: "1.0.0", files: ["/data/x": ModuleKit.bytes(3 << 20, seed: 7)],
                key: fx.authority.moduleSigningKey, base: fx.directory)
            let payload = try await ModuleKit.install(bundle, into: fx.modules)
            let victim = try #require(payload.objects.max { $0.size < $1.size })
            // Same size, different content: only the sha256 can tell.
            let path = fx.modules.objects.path(of: victim.digest)
            chmod(path, 0o644)
            try Data(ModuleKit.bytes(Int(victim.size), seed: 99)).write(to: URL(fileURLWithPath: path))

            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            let layout = ModuleFetcher.Layout(stateDirectory: stateDirectory)
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, _, _ in
                let task = try await Self.attach(fx, node: identity.nodeID, payload)
                #expect(task.state == .failed)
                let error = try #require(task.error)
                #expect(error.code == MusterError.Code.digestMismatch.wireName)
                #expect(error.message.contains(victim.digest))
                #expect(!FileManager.default.fileExists(atPath: layout.objects.path(of: victim.digest)))
                #expect(ModuleKit.files(under: layout.partialDirectory).isEmpty)
                #expect(!FileManager.default.fileExists(atPath: layout.descriptorPath(payload.image.digest)))
            }
        }
    }

    @Test(.requiresRoot)
    func anObjectMissingAtTheCoordinatorFailsWithNotFound() async throws {
        try await ChannelFixture.with { fx in
            let bundle = try await ModuleKit.build(
                name: "shop", version: "1.0.0", files: ["/data/x": ModuleKit.bytes(10_000, seed: 8)],
                key: fx.authority.moduleSigningKey, base: fx.directory)
            let payload = try await ModuleKit.install(bundle, into: fx.modules)
            let gone = try #require(payload.objects.first)
            #expect(unlink(fx.modules.objects.path(of: gone.digest)) == 0)

            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            let layout = ModuleFetcher.Layout(stateDirectory: stateDirectory)
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { session, _, _ in
                let task = try await Self.attach(fx, node: identity.nodeID, payload)
                #expect(task.state == .failed)
                let error = try #require(task.error)
                #expect(error.code == MusterError.Code.notFound.wireName)
                #expect(error.message == "the coordinator does not hold object \(gone.digest)")
                #expect(!FileManager.default.fileExists(atPath: layout.descriptorPath(payload.image.digest)))
                // The error frame answered the request; the session stayed up.
                #expect(session.status.establishedCount == 1)
            }
        }
    }

    @Test(.requiresRoot)
    func aDroppedConnectionResumesWithinTheFetchWhereItStopped() async throws {
        try await ChannelFixture.with { fx in
            let size = 24 << 20
            let bundle = try await ModuleKit.build(
                name: "big", version: "1.0.0", files: ["/data/blob": ModuleKit.bytes(size, seed: 11)],
                key: fx.authority.moduleSigningKey, base: fx.directory)
            let payload = try await ModuleKit.install(bundle, into: fx.modules)
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { session, _, transport in
                let configuration = ModuleFetcher.Configuration(window: 4, chunkSize: 1 << 20)
                let fetcher = ModuleFetcher(
                    stateDirectory: stateDirectory, transport: transport, configuration: configuration,
                    trustedKeys: { [fx.authority.moduleSigningKey.publicKey] }, logger: fx.logger)
                let cut = Mutex(false)
                let listener = fx.listener
                let (_, report) = try await fetcher.fetch(imageDigest: payload.image.digest) { progress in
                    guard progress.bytesReceived >= 8 << 20, !cut.withLock({ $0 }) else { return }
                    cut.withLock { $0 = true }
                    // The coordinator drops the session mid-transfer.
                    await listener.disconnect(nodeID: identity.nodeID)
                }
                #expect(cut.withLock { $0 })
                #expect(report.resumes == 1)
                #expect(session.status.establishedCount >= 2)
                #expect(
                    ModuleFetcher.Layout(stateDirectory: stateDirectory).objects.verify(payload.objects).isEmpty)
                // Restarting from zero would receive at least 8 MiB more than the module; resuming receives at most
                // the chunks that were in flight when the connection dropped.
                let module = payload.totalObjectBytes + payload.image.size + (try Self.descriptorSize(bundle))
                #expect(report.bytesReceived >= module)
                #expect(report.bytesReceived <= module + UInt64(configuration.window * configuration.chunkSize))
            }
        }
    }

    @Test(.requiresRoot)
    func anInterruptedFetchLeavesAPartialFileThatTheNextFetchContinues() async throws {
        try await ChannelFixture.with { fx in
            let size = 16 << 20
            let bundle = try await ModuleKit.build(
                name: "big", version: "1.0.0", files: ["/data/blob": ModuleKit.bytes(size, seed: 12)],
                key: fx.authority.moduleSigningKey, base: fx.directory)
            let payload = try await ModuleKit.install(bundle, into: fx.modules)
            let blob = try #require(payload.objects.max { $0.size < $1.size })
            let (_, stateDirectory) = try await fx.join(try await fx.token())
            let layout = ModuleFetcher.Layout(stateDirectory: stateDirectory)
            try await Self.withAgent(fx, stateDirectory: stateDirectory) { _, _, transport in
                let fetcher = ModuleFetcher(
                    stateDirectory: stateDirectory, transport: transport,
                    configuration: .init(window: 4, chunkSize: 1 << 20),
                    trustedKeys: { [fx.authority.moduleSigningKey.publicKey] }, logger: fx.logger)
                // First attempt: stopped (as by an agent shutdown) once 5 MiB arrived.
                let (reached, reachedSignal) = AsyncStream<Void>.makeStream()
                await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        _ = try await fetcher.fetch(imageDigest: payload.image.digest) { progress in
                            guard progress.bytesReceived >= 5 << 20 else { return }
                            reachedSignal.yield()
                            try? await Task.sleep(for: .seconds(3600))
                        }
                    }
                    for await _ in reached { break }
                    group.cancelAll()
                    while let next = await group.nextResult() {
                        if case .success = next { Issue.record("the first fetch was expected to be cancelled") }
                    }
                }
                let partial = "\(layout.partialDirectory)/object-\(blob.digest)"
                let kept = try #require(FileStatus.lstat(partial)?.size)
                #expect(kept >= 5 << 20 && kept < blob.size)
                #expect(!FileManager.default.fileExists(atPath: layout.objects.path(of: blob.digest)))
                #expect(!FileManager.default.fileExists(atPath: layout.descriptorPath(payload.image.digest)))

                // Second attempt: continues at the partial file's end; the kept bytes do not travel again.
                let absent = payload.objects.filter { !FileManager.default.fileExists(atPath: layout.objects.path(of: $0.digest)) }
                let imageLeft = FileManager.default.fileExists(atPath: layout.imagePath(payload.image.digest)) ? 0 : payload.image.size
                let (_, report) = try await fetcher.fetch(imageDigest: payload.image.digest)
                #expect(report.resumedBytes == kept)
                let rest = absent.reduce(UInt64(0)) { $0 + $1.size } - kept + imageLeft
                #expect(report.bytesReceived == rest + (try Self.descriptorSize(bundle)))
                #expect(layout.objects.verify(payload.objects).isEmpty)
                #expect(ModuleKit.files(under: layout.partialDirectory).isEmpty)
            }
        }
    }
}

/// Disk full on the node, with the real `muster-agent` binary: its `modules/` is a 1 MiB tmpfs that exists only
/// in a private mount namespace held by a `sleep` process (killing the holder removes both; nothing leaks).
@Suite("Modules: disk full while fetching (real agent binary, tmpfs in a private mount namespace)")
struct ModuleDiskFullTests {
    @Test(.requiresRoot)
    func aFullDiskFailsTheFetchCleanlyAndLeavesNoHalfWrittenObject() async throws {
        try Binaries.check()
        try await ChannelFixture.with { fx in
            let bundle = try await ModuleKit.build(
                name: "big", version: "1.0.0",
                files: ["/data/blob": ModuleKit.bytes(3 << 20, seed: 21), "/data/small": ModuleKit.bytes(1000, seed: 22)],
                key: fx.authority.moduleSigningKey, base: fx.directory)
            let payload = try await ModuleKit.install(bundle, into: fx.modules)
            let blob = try #require(payload.objects.max { $0.size < $1.size })
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            let modules = "\(stateDirectory)/modules"
            try FileManager.default.createDirectory(atPath: modules, withIntermediateDirectories: true)

            let holder = Process()
            holder.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            holder.arguments = ["--mount", "--propagation", "private", "/bin/sleep", "600"]
            try holder.run()
            defer {
                kill(holder.processIdentifier, SIGKILL)
                holder.waitUntilExit()
            }
            let pid = holder.processIdentifier
            let ours = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/mnt")
            try await ChannelFixture.eventually("the holder has its own mount namespace") {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/mnt")).map { $0 != ours }
                    ?? false
            }
            let enter = "--mount=/proc/\(pid)/ns/mnt"
            let mount = try await runCommand(
                "/usr/bin/nsenter", [enter, "/bin/mount", "-t", "tmpfs", "-o", "size=1m", "muster-test", modules])
            try #require(mount.status == 0, "mount: \(mount.stderr)")

            let agent = try ChildProcess.spawn(
                name: "agent-full", path: "/usr/bin/nsenter",
                arguments: [enter, Binaries.agent, "run", "--state-dir", stateDirectory],
                environment: ["MUSTER_LOG_LEVEL": "debug"], logPath: "\(fx.directory)/agent-full.log")
            defer { agent.killAndReap() }
            try await ChannelFixture.eventually("the agent connected") {
                await fx.listener.isConnected(nodeID: identity.nodeID)
            }

            let failed = try await ModuleTransferTests.attach(fx, node: identity.nodeID, payload)
            #expect(failed.state == .failed, "\(agent.logTail())")
            let error = try #require(failed.error)
            #expect(error.code == MusterError.Code.io.wireName)
            #expect(error.message.contains("no space left on device"), "\(error.message)")
            let listing = try await runCommand("/usr/bin/nsenter", [enter, "/usr/bin/find", modules, "-type", "f"])
            try #require(listing.status == 0, "find: \(listing.stderr)")
            let files = listing.stdout.split(separator: "\n").map(String.init)
            #expect(!files.contains { $0.hasSuffix(ObjectDirectory.relativePath(of: blob.digest)) }, "\(files)")
            #expect(!files.contains { $0.contains("/partial/") }, "\(files)")
            #expect(!files.contains { $0.contains("/descriptors/") }, "\(files)")

            // With room the fetch completes and the object is intact. (This host has no systemd manager, so the
            // agent says it cannot attach after fetching: the fetch is what this test is about.)
            let grow = try await runCommand("/usr/bin/nsenter", [enter, "/bin/mount", "-o", "remount,size=64m", modules])
            try #require(grow.status == 0, "remount: \(grow.stderr)")
            let done = try await ModuleTransferTests.attach(fx, node: identity.nodeID, payload)
            #expect(done.error?.code == MusterError.Code.unitNotFound.wireName, "\(agent.logTail())")
            #expect(done.error?.message.contains("was fetched, but this node cannot attach it") == true)
            let sum = try await runCommand(
                "/usr/bin/nsenter", [enter, "/usr/bin/sha256sum", "\(modules)/objects/\(ObjectDirectory.relativePath(of: blob.digest))"])
            #expect(sum.stdout.hasPrefix(blob.digest))
        }
    }
}
