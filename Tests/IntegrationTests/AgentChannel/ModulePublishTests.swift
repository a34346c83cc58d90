import Crypto
import Foundation
import Logging
import NIOHTTP1
import Shared
import TestSupport
import Testing

@testable import Agent
@testable import Coordinator

/// Publishing and attaching through the admin API of a whole coordinator (`CoordinatorServices.run`, as
/// `muster serve` runs it: real PostgreSQL, real TLS on both ports), the CLI's publish code and a real agent.
@Suite("Modules: publish, ls and attach through the admin API of a whole coordinator")
struct ModulePublishTests {
    /// Runs a coordinator until `body` returns.
    static func withCoordinator(
        _ body: @Sendable (String, CoordinatorServices.Ready, AdminClient) async throws -> Void
    ) async throws {
        let (name, url) = try PostgresHarness.makeDatabase(prefix: "modpub")
        defer { PostgresHarness.dropDatabase(name) }
        let directory = try ChannelFixture.temporaryDirectory("modpub")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var heartbeats = CoordinatorConfiguration.Heartbeats()
        heartbeats.minimumInterval = .milliseconds(200)
        heartbeats.failoverGrace = .zero
        let configuration = CoordinatorConfiguration(
            stateDirectory: "\(directory)/coordinator", databaseURL: url, databaseBootTimeout: .seconds(10),
            agentListen: .init(host: "127.0.0.1", port: 0), adminListen: .init(host: "127.0.0.1", port: 0),
            advertise: "127.0.0.1", heartbeats: heartbeats, logLevel: .critical)
        let (readiness, ready) = AsyncStream<CoordinatorServices.Ready>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { ready.finish() }
                try await CoordinatorServices.run(
                    configuration: configuration, logger: ChannelFixture.logger, signals: [],
                    onReady: { ready.yield($0) })
            }
            defer { group.cancelAll() }
            var iterator = readiness.makeAsyncIterator()
            let coordinator = try #require(await iterator.next())
            try await body(directory, coordinator, AdminClient(configuration: coordinator.client))
        }
    }

    static func publish(_ bundle: ModuleBundle, client: AdminClient) async throws -> Muster.ModulePublish.Summary {
        try await Muster.ModulePublish.publish(directory: bundle.directory, client: client)
    }

    @Test(.requiresRoot)
    func publishIsVerifiedIdempotentAndRefusesChangedVersionsAndTamperedBundles() async throws {
        try await Self.withCoordinator { directory, _, client in
            let key = try DescriptorSigner.load(stateDirectory: "\(directory)/coordinator").key
            let repository = ModuleRepository(stateDirectory: "\(directory)/coordinator")
            let files = ["/data/a": ModuleKit.bytes(70_000, seed: 1), "/data/b": ModuleKit.bytes(5_000, seed: 2)]
            let bundle = try await ModuleKit.build(
                name: "shop", version: "1.0.0", files: files, key: key, base: directory)
            let payload = try bundle.verify(trustedKeys: [key.publicKey])

            let first = try await Self.publish(bundle, client: client)
            #expect(first.published)
            #expect(first.imageUploaded)
            #expect(first.uploadedObjects == payload.objects.count)
            #expect(first.uploadedBytes == payload.totalObjectBytes)
            #expect(first.module.imageDigest == payload.image.digest)
            #expect(repository.objects.verify(payload.objects).isEmpty)
            #expect(ModuleKit.files(under: repository.temporaryDirectory).isEmpty)
            for object in payload.objects {
                #expect(SecureFile.mode(of: repository.objects.path(of: object.digest)).map { $0 & 0o777 } == 0o444)
            }

            let listed = try await client.send(.GET, "/v1/modules", as: [ModuleRecord].self)
            #expect(listed.count == 1)
            let record = try #require(listed.first)
            #expect(record.name == "shop" && record.version == "1.0.0")
            #expect(record.objects == payload.objects.count)
            #expect(record.objectBytes == payload.totalObjectBytes)
            #expect(record.services == ["main"])
            #expect(record.keyID == ModuleDescriptor.keyID(of: key.publicKey))

            // The same build again: nothing uploaded, nothing changed.
            let again = try await Self.publish(bundle, client: client)
            #expect(!again.published)
            #expect(again.uploadedObjects == 0 && !again.imageUploaded)
            #expect(again.module == record)

            // Another build under the published name@version is refused, precisely.
            let changed = try await ModuleKit.build(
                name: "shop", version: "1.0.0", files: ["/data/a": ModuleKit.bytes(70_000, seed: 3)], key: key,
                base: "\(directory)/changed")
            let conflict = await #expect(throws: MusterError.self) { try await Self.publish(changed, client: client) }
            #expect(conflict?.code == .conflict)
            #expect(conflict?.message.contains("shop@1.0.0 is already published with image sha256:\(payload.image.digest)") == true)

            // A bundle whose object was changed after the build is refused before anything is uploaded.
            let other = try await ModuleKit.build(
                name: "other", version: "1.0.0", files: ["/data/x": ModuleKit.bytes(9_000, seed: 4)], key: key,
                base: directory)
            let otherPayload = try other.loadDescriptor().payload
            let victim = try #require(otherPayload.objects.max { $0.size < $1.size })
            let path = other.objects.path(of: victim.digest)
            chmod(path, 0o644)
            try Data(ModuleKit.bytes(Int(victim.size), seed: 5)).write(to: URL(fileURLWithPath: path))
            let tampered = await #expect(throws: MusterError.self) { try await Self.publish(other, client: client) }
            #expect(tampered?.code == .digestMismatch)
            #expect(tampered?.message.contains(victim.digest) == true)
            #expect(try repository.size(of: .object, digest: victim.digest) == nil)

            // The API itself refuses an upload that does not hash to its name (400), storing nothing.
            let wrong = try await client.raw(.PUT, "/v1/modules/objects/\(victim.digest)", body: Data("not it".utf8))
            #expect(wrong.status == 400)
            #expect(AdminClient.error(from: wrong).code == .digestMismatch)
            #expect(try repository.size(of: .object, digest: victim.digest) == nil)
            #expect(ModuleKit.files(under: repository.temporaryDirectory).isEmpty)
            // And a descriptor signed by another key (400, not published).
            let foreign = try ModuleDescriptor.sign(otherPayload, with: Curve25519.Signing.PrivateKey()).encoded()
            let refused = try await client.raw(.POST, "/v1/modules", body: foreign)
            #expect(refused.status == 400)
            #expect(AdminClient.error(from: refused).code == .verificationFailed)
            #expect(try await client.send(.GET, "/v1/modules", as: [ModuleRecord].self).map(\.name) == ["shop"])
        }
    }

    @Test(.requiresRoot)
    func attachThroughTheAPIFetchesTheModuleOntoTheNode() async throws {
        try await Self.withCoordinator { directory, coordinator, client in
            let key = try DescriptorSigner.load(stateDirectory: "\(directory)/coordinator").key
            let bundle = try await ModuleKit.build(
                name: "shop", version: "1.0.0", files: ["/data/a": ModuleKit.bytes(2 << 20, seed: 6)], key: key,
                base: directory)
            _ = try await Self.publish(bundle, client: client)
            let payload = try bundle.loadDescriptor().payload

            let created = try await client.send(
                .POST, "/v1/tokens", body: CreateTokenRequest(ttlSeconds: 600, uses: 1, labels: [:]),
                as: CreatedToken.self)
            let stateDirectory = "\(directory)/agent"
            let identity = try await JoinClient(
                coordinator: CoordinatorAddress(host: "127.0.0.1", port: coordinator.agentPort),
                token: try JoinToken(parsing: created.token), stateDirectory: stateDirectory,
                facts: ChannelFixture.facts, logger: ChannelFixture.logger
            ).join()
            let node = identity.nodeID.uuidString.lowercased()

            let unknown = try await client.raw(
                .POST, "/v1/modules/attach",
                body: try MusterJSON.encoder().encode(ModuleTasksRequest(name: "nope", nodes: [node])))
            #expect(unknown.status == 404)
            #expect(AdminClient.error(from: unknown).message == "module nope is not published")

            let objects = ObjectTransport()
            let runner = try AgentServices.makeTaskRunner(
                configuration: AgentConfiguration(stateDirectory: stateDirectory), objects: objects,
                moduleStep: .fetchOnly, logger: ChannelFixture.logger)
            let session = CoordinatorSession(
                configuration: .init(stateDirectory: stateDirectory), tasks: runner, objects: objects,
                logger: ChannelFixture.logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await runner.run() }
                group.addTask { try await session.run() }
                defer { group.cancelAll() }
                try await ChannelFixture.eventually("the agent's session is established") { session.status.connected }

                let response = try await client.send(
                    .POST, "/v1/modules/attach", body: ModuleTasksRequest(name: "shop", nodes: [node]),
                    as: ModuleTasksResponse.self)
                #expect(response.module?.version == "1.0.0")
                let task = try #require(response.tasks.first)
                #expect(task.kind == TaskKind.attachModule.rawValue)
                let tasks = try await ModuleTaskWaiter.wait(
                    for: response.tasks, client: client, timeout: "2m", quiet: true)
                let done = try #require(tasks.first)
                #expect(done.state == .succeeded, "\(String(describing: done.error))")
                let layout = ModuleFetcher.Layout(stateDirectory: stateDirectory)
                #expect(ModuleKit.files(under: layout.objects.path) == ModuleKit.objectPaths(payload.objects))
                #expect(layout.objects.verify(payload.objects).isEmpty)
                #expect(FileManager.default.fileExists(atPath: layout.descriptorPath(payload.image.digest)))

                // Detach with --all creates one detachModule task per node; this in-process agent has no module
                // attacher (no systemd manager here), which the task says precisely.
                let detach = try await client.send(
                    .POST, "/v1/modules/detach", body: ModuleTasksRequest(name: "shop", all: true),
                    as: ModuleTasksResponse.self)
                #expect(detach.tasks.map(\.kind) == [TaskKind.detachModule.rawValue])
                #expect(detach.tasks.first?.spec == .object(["name": .string("shop")]))
                let detached = try await ModuleTaskWaiter.wait(
                    for: detach.tasks, client: client, timeout: "2m", quiet: true)
                #expect(detached.first?.state == .failed)
                #expect(detached.first?.error?.code == MusterError.Code.unitNotFound.wireName)
                let neither = try await client.raw(
                    .POST, "/v1/modules/detach", body: try MusterJSON.encoder().encode(ModuleTasksRequest(name: "shop")))
                #expect(neither.status == 400)
                #expect(AdminClient.error(from: neither).message == "name the nodes (--node ID) or pass --all")
            }
        }
    }
}
