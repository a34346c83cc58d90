import Crypto
import Foundation
import Hummingbird
import Shared

/// `POST /v1/sync` body: copy `source.path` on `source.node` to `destination.path` on `destination.node`.
public struct NodeSyncRequest: Codable, Sendable, Equatable {
    public struct End: Codable, Sendable, Equatable {
        public var node: String
        public var path: String

        public init(node: String, path: String) {
            self.node = node
            self.path = path
        }
    }

    public var source: End
    public var destination: End
    public var delete: Bool?
    public var excludes: [String]?
    /// How long the source node's daemon waits for the pull (default 3600).
    public var maxSeconds: Int?

    public init(source: End, destination: End, delete: Bool? = nil, excludes: [String]? = nil, maxSeconds: Int? = nil) {
        self.source = source
        self.destination = destination
        self.delete = delete
        self.excludes = excludes
        self.maxSeconds = maxSeconds
    }
}

/// The two tasks of a node → node sync.
public struct NodeSyncTasks: Codable, Sendable, Equatable {
    /// `syncTree` with `serve` on the source node: the read-only rsync daemon.
    public var serve: TaskRecord
    /// `syncTree` with an `rsync://` source on the destination node: the pull.
    public var pull: TaskRecord
}

/// `POST /v1/sync`: node → node sync through an rsync daemon the source node's agent runs for the task
/// (bound to the address its session comes from, read-only module, per-task secret).
struct SyncRoutes {
    let dependencies: AdminDependencies

    func register(on group: RouterGroup<AdminRequestContext>) {
        group.post("sync") { request, context -> Response in
            let input = try await VolumesRoutes.decode(
                NodeSyncRequest.self, request,
                example:
                    #"{"source": {"node": "<id>", "path": "/srv/golden"}, "destination": {"node": "<id>", "path": "/srv/golden"}}"#
            )
            let sourceNode = try TasksRoutes.uuid(input.source.node, what: "node")
            let destinationNode = try TasksRoutes.uuid(input.destination.node, what: "node")
            guard sourceNode != destinationNode else {
                throw MusterError(
                    .invalidInput, "source and destination are the same node", hint: "omit --from-node for a local copy"
                )
            }
            let node = try await dependencies.nodes.show(id: sourceNode)
            guard let address = node.address, !address.isEmpty else {
                throw MusterError(
                    .conflict, "node \(input.source.node) has no known cluster address (no session yet)",
                    hint: "start its agent first")
            }
            let host = address.contains(":") ? "[\(address)]" : address
            let port = Int.random(in: 40000...49999)
            let module = "muster-" + String(UUID().uuidString.lowercased().prefix(8))
            let secret = SymmetricKey(size: .bits256).withUnsafeBytes { bytes in
                bytes.map { String(format: "%02x", $0) }.joined()
            }
            let actor = context.actor ?? "unknown"
            let now = dependencies.now()
            let serve = try await dependencies.tasks.create(
                nodeID: sourceNode, kind: .syncTree,
                spec: .object([
                    "serve": .object([
                        "path": .string(input.source.path), "address": .string(address), "port": .number(Double(port)),
                        "module": .string(module), "secret": .string(secret),
                        "maxSeconds": .number(Double(input.maxSeconds ?? 3600)),
                    ])
                ]), maxAttempts: 1, now: now, actor: actor)
            let pull = try await dependencies.tasks.create(
                nodeID: destinationNode, kind: .syncTree,
                spec: .object([
                    "source": .string("rsync://muster@\(host):\(port)/\(module)/"),
                    "destination": .string(input.destination.path), "secret": .string(secret),
                    "delete": .bool(input.delete ?? false),
                    "excludes": .array((input.excludes ?? []).map { .string($0) }),
                ]), maxAttempts: 1, now: now, actor: actor)
            await dependencies.dispatcher?.dispatch(nodeID: sourceNode)
            await dependencies.dispatcher?.dispatch(nodeID: destinationNode)
            return try .json(NodeSyncTasks(serve: serve, pull: pull), status: .created)
        }
    }
}
