import ArgumentParser
import Crypto
import Foundation
import NIOHTTP1
import Shared

extension Muster {
    /// `muster module publish OUT [--state-dir D] [--json]`.
    struct ModulePublish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "publish",
            abstract: "Store a built module at the coordinator, so nodes can attach it.",
            discussion: """
                Verifies OUT (a `muster module build` output) against the cluster's module key first: signature,
                image digest and every object re-hashed. Then uploads only the files the coordinator lacks (each
                streamed and checked against its sha256 there, stored through temp + fsync + rename) and records
                the descriptor. Publishing the same build again changes nothing; a different build under a
                published name@version is refused. Exit codes: 0 published (or already), 1 refused, 2 usage or
                coordinator unreachable.
                """)

        @Argument(help: "A `muster module build` output directory.")
        var directory: String

        @Option(help: "Uploads at the same time.")
        var parallel = 4

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        struct Summary: Codable, Equatable {
            var module: ModuleRecord
            var published: Bool
            var uploadedObjects: Int
            var uploadedBytes: UInt64
            var imageUploaded: Bool
        }

        func run() async throws {
            let summary = try await Self.publish(directory: directory, parallel: parallel, client: try client.client())
            if output.json {
                print(try ModuleOutput.jsonString(summary))
            } else if output.quiet {
                print(summary.module.imageDigest)
            } else {
                let module = summary.module
                print(
                    summary.published
                        ? "published \(module.name)@\(module.version) (image sha256:\(module.imageDigest))"
                        : "\(module.name)@\(module.version) was already published with this image; nothing changed")
                print(
                    "  uploaded \(summary.uploadedObjects) objects (\(summary.uploadedBytes) bytes)"
                        + (summary.imageUploaded ? " and the image" : ""))
            }
        }

        /// The publication itself (tests call this with a client of an in-process coordinator).
        static func publish(directory: String, parallel: Int = 4, client base: AdminClient) async throws -> Summary {
            var admin = base
            admin.timeout = .seconds(3600)
            let bundle = ModuleBundle(directory: directory)
            let key = try await admin.send(.GET, "/v1/modules/key", as: ModuleKeyResponse.self)
            let payload = try bundle.verify(trustedKeys: [try ModulePublicKey.decode(key.publicKey)])
            let missing = try await admin.send(
                .POST, "/v1/modules/missing",
                body: MissingFilesRequest(image: payload.image.digest, objects: payload.objects.map(\.digest)),
                as: MissingFilesResponse.self)
            if missing.image {
                _ = try await admin.upload(
                    .PUT, "/v1/modules/images/\(payload.image.digest)", file: bundle.imagePath,
                    as: StoredFileResponse.self)
            }
            let sizes = Dictionary(payload.objects.map { ($0.digest, $0.size) }, uniquingKeysWith: { a, _ in a })
            let objects = bundle.objects
            let uploader = admin
            try await withThrowingTaskGroup(of: Void.self) { group in
                var pending = missing.objects[...]
                for _ in 0..<max(1, parallel) {
                    guard let digest = pending.popFirst() else { break }
                    group.addTask { try await Self.uploadObject(digest, from: objects, client: uploader) }
                }
                while try await group.next() != nil {
                    guard let digest = pending.popFirst() else { continue }
                    group.addTask { try await Self.uploadObject(digest, from: objects, client: uploader) }
                }
            }
            guard let descriptor = FileManager.default.contents(atPath: bundle.descriptorPath) else {
                throw MusterError(.notFound, "\(bundle.descriptorPath) does not exist")
            }
            let response = try await admin.raw(.POST, "/v1/modules", body: descriptor)
            guard (200..<300).contains(response.status) else { throw AdminClient.error(from: response) }
            let result = try MusterJSON.decoder().decode(PublishResult.self, from: response.body)
            return Summary(
                module: result.module, published: result.published, uploadedObjects: missing.objects.count,
                uploadedBytes: missing.objects.reduce(0) { $0 + (sizes[$1] ?? 0) }, imageUploaded: missing.image)
        }

        static func uploadObject(_ digest: String, from objects: ObjectDirectory, client: AdminClient) async throws {
            guard ObjectDirectory.isDigest(digest) else {
                throw MusterError(.protocolError, "the coordinator asked for '\(digest)', which is not a digest")
            }
            _ = try await client.upload(
                .PUT, "/v1/modules/objects/\(digest)", file: objects.path(of: digest), as: StoredFileResponse.self)
        }
    }

    /// `muster module ls [--json]`.
    struct ModuleList: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List published modules, newest version first within a name.")

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let modules = try await client.client().send(.GET, "/v1/modules", as: [ModuleRecord].self)
            print(try Output.render(.modules(modules), options: output))
        }
    }
}
