import Crypto
import Foundation
import Hummingbird
import NIOCore
import Shared

/// What the module routes work with: the published rows, the files, and the key descriptors must be signed with.
public struct ModuleServices: Sendable {
    public var store: ModuleStore
    public var repository: ModuleRepository
    /// The cluster's module signing public key; only descriptors it signed are published.
    public var trustedKey: Curve25519.Signing.PublicKey

    public init(store: ModuleStore, repository: ModuleRepository, trustedKey: Curve25519.Signing.PublicKey) {
        self.store = store
        self.repository = repository
        self.trustedKey = trustedKey
    }
}

/// `GET /v1/modules/key`: the public half of the cluster's module signing key.
public struct ModuleKeyResponse: Codable, Sendable, Equatable {
    /// Base64 of the raw Ed25519 public key (``ModulePublicKey``).
    public var publicKey: String
    public var keyID: String
}

/// `POST /v1/modules/missing` body: which of these files does the coordinator lack?
public struct MissingFilesRequest: Codable, Sendable, Equatable {
    public var image: String
    public var objects: [String]
}

/// Answer to ``MissingFilesRequest``.
public struct MissingFilesResponse: Codable, Sendable, Equatable {
    public var image: Bool
    public var objects: [String]
}

/// `PUT /v1/modules/{objects|images}/{digest}` answer.
public struct StoredFileResponse: Codable, Sendable, Equatable {
    public var digest: String
    /// `false` when the coordinator already held the file (the upload was checked and dropped).
    public var stored: Bool
}

/// `POST /v1/modules/attach` and `/detach` body.
public struct ModuleTasksRequest: Codable, Sendable, Equatable {
    public var name: String
    /// Attach only; default: the newest published version.
    public var version: String?
    /// Node ids; or `all`.
    public var nodes: [String]?
    public var all: Bool?

    public init(name: String, version: String? = nil, nodes: [String]? = nil, all: Bool? = nil) {
        self.name = name
        self.version = version
        self.nodes = nodes
        self.all = all
    }
}

/// Answer of attach / detach: the module (attach) and one task per node.
public struct ModuleTasksResponse: Codable, Sendable, Equatable {
    public var module: ModuleRecord?
    public var tasks: [TaskRecord]
}

/// `GET /v1/modules`, `POST /v1/modules/missing`, `PUT /v1/modules/objects/{digest}`,
/// `PUT /v1/modules/images/{digest}`, `POST /v1/modules` (publish a descriptor), `POST /v1/modules/attach`,
/// `POST /v1/modules/detach`.
///
/// Publishing is upload-then-commit: the CLI asks which files are missing, streams each one with its digest in
/// the path (the coordinator hashes the stream and refuses a mismatch, writing through temp + fsync + rename),
/// then posts the descriptor. The descriptor is accepted only when its signature verifies with the cluster key
/// and the image and every object are stored with the signed sizes.
struct ModulesRoutes {
    let dependencies: AdminDependencies

    func register(on group: RouterGroup<AdminRequestContext>) {
        group.get("modules") { _, _ -> Response in
            try .json(try await services().store.list())
        }
        group.get("modules/key") { _, _ -> Response in
            let key = try services().trustedKey
            return try .json(
                ModuleKeyResponse(publicKey: ModulePublicKey.encode(key), keyID: ModuleDescriptor.keyID(of: key)))
        }
        group.post("modules/missing") { request, _ -> Response in
            let input: MissingFilesRequest = try await Self.decode(request, what: "a list of digests")
            let repository = try services().repository
            let imageMissing = try repository.size(of: .image, digest: input.image) == nil
            var missing: [String] = []
            for digest in input.objects {
                if try repository.size(of: .object, digest: digest) == nil { missing.append(digest) }
            }
            return try .json(MissingFilesResponse(image: imageMissing, objects: missing))
        }
        group.put("modules/objects/{digest}") { request, context -> Response in
            try await upload(.object, request: request, context: context)
        }
        group.put("modules/images/{digest}") { request, context -> Response in
            try await upload(.image, request: request, context: context)
        }
        group.post("modules") { request, context -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            let data = Data(body.readableBytesView)
            let descriptor = try ModuleDescriptor.decode(data, source: "the request body")
            let services = try services()
            let payload = try descriptor.verify(trustedKeys: [services.trustedKey])
            try Self.checkFiles(payload, repository: services.repository)
            try services.repository.storeDescriptor(data, imageDigest: payload.image.digest)
            let result = try await services.store.publish(
                descriptor, actor: context.actor ?? "unknown", now: dependencies.now())
            return try .json(result, status: result.published ? .created : .ok)
        }
        group.post("modules/attach") { request, context -> Response in
            let input: ModuleTasksRequest = try await Self.decode(request, what: "an attach request")
            let module = try await services().store.find(name: input.name, version: input.version)
            let spec = try JSONValue(
                encoding: AttachModuleSpec(name: module.name, version: module.version, imageDigest: module.imageDigest))
            let tasks = try await createTasks(input, kind: .attachModule, spec: spec, actor: context.actor)
            return try .json(ModuleTasksResponse(module: module, tasks: tasks), status: .created)
        }
        group.post("modules/detach") { request, context -> Response in
            let input: ModuleTasksRequest = try await Self.decode(request, what: "a detach request")
            guard ModuleManifest.isSafeName(input.name) else {
                throw MusterError(.invalidInput, "'\(input.name)' is not a module name")
            }
            let spec = try JSONValue(encoding: DetachModuleSpec(name: input.name))
            let tasks = try await createTasks(input, kind: .detachModule, spec: spec, actor: context.actor)
            return try .json(ModuleTasksResponse(module: nil, tasks: tasks), status: .created)
        }
    }

    private func services() throws -> ModuleServices {
        guard let modules = dependencies.modules else {
            throw MusterError(.notFound, "this coordinator does not serve modules")
        }
        return modules
    }

    private func upload(_ kind: TransferKind, request: Request, context: AdminRequestContext) async throws -> Response {
        let digest = try context.parameters.require("digest")
        let stored = try await services().repository.store(kind, digest: digest, body: request.body)
        return try .json(StoredFileResponse(digest: digest, stored: stored), status: stored ? .created : .ok)
    }

    /// The image and every object must be stored, with the sizes the descriptor signs.
    static func checkFiles(_ payload: ModuleDescriptor.Payload, repository: ModuleRepository) throws {
        let name = "\(payload.manifest.name)@\(payload.manifest.version)"
        guard let imageSize = try repository.size(of: .image, digest: payload.image.digest) else {
            throw MusterError(
                .invalidInput, "cannot publish \(name): its image \(payload.image.digest) was not uploaded",
                hint: "use `muster module publish OUT`, which uploads the files first")
        }
        guard imageSize == payload.image.size else {
            throw MusterError(
                .digestMismatch, "the stored image \(payload.image.digest) is \(imageSize) bytes, signed: \(payload.image.size)")
        }
        var missing: [String] = []
        for object in payload.objects {
            guard let size = try repository.size(of: .object, digest: object.digest) else {
                missing.append(object.digest)
                continue
            }
            guard size == object.size else {
                throw MusterError(
                    .digestMismatch, "the stored object \(object.digest) is \(size) bytes, signed: \(object.size)")
            }
        }
        guard missing.isEmpty else {
            throw MusterError(
                .invalidInput,
                "cannot publish \(name): \(missing.count) of its objects were not uploaded (first: \(missing[0]))",
                hint: "use `muster module publish OUT`, which uploads the files first")
        }
    }

    private func createTasks(
        _ input: ModuleTasksRequest, kind: TaskKind, spec: JSONValue, actor: String?
    ) async throws -> [TaskRecord] {
        let nodes: [UUID]
        if input.all == true {
            guard (input.nodes ?? []).isEmpty else {
                throw MusterError(.invalidInput, "pass either nodes or all, not both")
            }
            nodes = try await dependencies.nodes.list().map(\.id)
            guard !nodes.isEmpty else {
                throw MusterError(.notFound, "the cluster has no nodes", hint: "join one with `muster token create`")
            }
        } else {
            let given = input.nodes ?? []
            guard !given.isEmpty else {
                throw MusterError(.invalidInput, "name the nodes (--node ID) or pass --all")
            }
            nodes = try given.map { try TasksRoutes.uuid($0, what: "node") }
        }
        var tasks: [TaskRecord] = []
        for node in nodes {
            tasks.append(
                try await dependencies.tasks.create(
                    nodeID: node, kind: kind, spec: spec, now: dependencies.now(), actor: actor ?? "unknown"))
        }
        for node in Set(nodes) { await dependencies.dispatcher?.dispatch(nodeID: node) }
        return tasks
    }

    static func decode<T: Decodable>(_ request: Request, what: String) async throws -> T {
        let body = try await request.body.collect(upTo: 4 << 20)
        do {
            return try MusterJSON.decoder().decode(T.self, from: Data(body.readableBytesView))
        } catch {
            throw MusterError(.invalidInput, "the request body is not \(what): \(error)")
        }
    }
}
