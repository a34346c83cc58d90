import Foundation
import Hummingbird
import Shared

/// `POST /v1/volumes` body: a volume; `mountPath` defaults to `/mnt/muster/NAME`, `options` to none.
public struct CreateVolumeRequest: Codable, Sendable, Equatable {
    public var name: String
    public var type: VolumeType
    public var server: String?
    public var source: String
    public var options: [String]?
    public var mountPath: String?

    public init(
        name: String, type: VolumeType, server: String? = nil, source: String, options: [String]? = nil,
        mountPath: String? = nil
    ) {
        self.name = name
        self.type = type
        self.server = server
        self.source = source
        self.options = options
        self.mountPath = mountPath
    }
}

/// `POST /v1/volumes/{name}/attach|detach` body: node ids, or `all`.
public struct VolumeTargetRequest: Codable, Sendable, Equatable {
    public var nodes: [String]?
    public var all: Bool?

    public init(nodes: [String]? = nil, all: Bool? = nil) {
        self.nodes = nodes
        self.all = all
    }
}

extension AdminDependencies {
    /// Volumes, on the same database and task store.
    public var volumes: VolumeStore { VolumeStore(database: database, tasks: tasks, logger: database.logger) }
}

/// `POST /v1/volumes`, `GET /v1/volumes`, `GET /v1/volumes/{name}`, `POST /v1/volumes/{name}/attach`,
/// `POST /v1/volumes/{name}/detach`.
struct VolumesRoutes {
    let dependencies: AdminDependencies

    func register(on group: RouterGroup<AdminRequestContext>) {
        group.post("volumes") { request, context -> Response in
            let input = try await Self.decode(
                CreateVolumeRequest.self, request,
                example: #"{"name": "golden", "type": "nfs4", "server": "10.0.0.5", "source": "/export"}"#)
            let spec = VolumeSpec(
                name: input.name, type: input.type, server: input.server, source: input.source,
                options: input.options ?? [],
                mountPath: input.mountPath ?? VolumeSpec.defaultMountPath(name: input.name))
            let view = try await dependencies.volumes.create(
                spec, now: dependencies.now(), actor: context.actor ?? "unknown")
            return try .json(view, status: .created)
        }
        group.get("volumes") { _, _ -> Response in
            try .json(try await dependencies.volumes.list())
        }
        group.get("volumes/{name}") { _, context -> Response in
            try .json(try await dependencies.volumes.show(name: try context.parameters.require("name")))
        }
        for action in ["attach", "detach"] {
            group.post("volumes/{name}/\(action)") { request, context -> Response in
                let name = try context.parameters.require("name")
                let input = try await Self.decode(
                    VolumeTargetRequest.self, request, example: #"{"nodes": ["<node id>"]} or {"all": true}"#)
                let nodes: [UUID]?
                switch (input.nodes, input.all ?? false) {
                case (let ids?, false) where !ids.isEmpty:
                    nodes = try ids.map { try TasksRoutes.uuid($0, what: "node") }
                case (nil, true):
                    nodes = nil
                default:
                    throw MusterError(.invalidInput, "give either node ids or all: true", hint: "--node ID or --all")
                }
                let store = dependencies.volumes
                let now = dependencies.now()
                let actor = context.actor ?? "unknown"
                let changes =
                    action == "attach"
                    ? try await store.attach(name: name, nodes: nodes, now: now, actor: actor)
                    : try await store.detach(name: name, nodes: nodes, now: now, actor: actor)
                for node in Set(changes.filter { $0.outcome == "created" }.map(\.node)) {
                    await dependencies.dispatcher?.dispatch(nodeID: node)
                }
                return try .json(changes)
            }
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, example: String) async throws -> T {
        let body = try await request.body.collect(upTo: 1 << 20)
        do {
            return try MusterJSON.decoder().decode(T.self, from: Data(body.readableBytesView))
        } catch {
            throw MusterError(.invalidInput, "the request body is not valid: \(error)", hint: "send \(example)")
        }
    }
}
