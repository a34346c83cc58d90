import Foundation
import Hummingbird
import Shared

/// `POST /v1/tasks` body.
public struct CreateTaskRequest: Codable, Sendable, Equatable {
    /// Node id (UUID).
    public var node: String
    /// A ``TaskKind`` name; unknown kinds are refused with 400.
    public var kind: String
    public var spec: JSONValue?
    public var maxAttempts: Int?

    public init(node: String, kind: String, spec: JSONValue? = nil, maxAttempts: Int? = nil) {
        self.node = node
        self.kind = kind
        self.spec = spec
        self.maxAttempts = maxAttempts
    }
}

/// `POST /v1/tasks`, `GET /v1/tasks[?node=ID&state=S]`, `GET /v1/tasks/{id}`, `POST /v1/tasks/{id}/cancel`.
struct TasksRoutes {
    let dependencies: AdminDependencies

    func register(on group: RouterGroup<AdminRequestContext>) {
        group.post("tasks") { request, context -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let input: CreateTaskRequest
            do {
                input = try MusterJSON.decoder().decode(CreateTaskRequest.self, from: Data(body.readableBytesView))
            } catch {
                throw MusterError(
                    .invalidInput, "the request body is not a task request: \(error)",
                    hint: #"send {"node": "<node id>", "kind": "checkHealth", "spec": {}}"#)
            }
            let kind = try TaskKind(validating: input.kind)
            let nodeID = try Self.uuid(input.node, what: "node")
            let spec = input.spec ?? .emptyObject
            guard case .object = spec else {
                throw MusterError(.invalidInput, "the task spec must be a JSON object")
            }
            let task = try await dependencies.tasks.create(
                nodeID: nodeID, kind: kind, spec: spec, maxAttempts: input.maxAttempts ?? TaskStore.defaultMaxAttempts,
                now: dependencies.now(), actor: context.actor ?? "unknown")
            // In-process wake-up: deliver now if this coordinator holds the node's session.
            await dependencies.dispatcher?.dispatch(nodeID: nodeID)
            return try .json(task, status: .created)
        }
        group.get("tasks") { request, _ -> Response in
            let node = try request.uri.queryParameters.get("node").map { try Self.uuid($0, what: "node") }
            let state = try request.uri.queryParameters.get("state").map { text in
                guard let state = TaskState(rawValue: text) else {
                    throw MusterError(
                        .invalidInput, "unknown task state '\(text)'",
                        hint: "states: \(TaskState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return state
            }
            return try .json(try await dependencies.tasks.list(nodeID: node, state: state))
        }
        group.get("tasks/{id}") { _, context -> Response in
            try .json(
                try await dependencies.tasks.show(id: try Self.uuid(context.parameters.require("id"), what: "task")))
        }
        group.post("tasks/{id}/cancel") { _, context -> Response in
            let id = try Self.uuid(context.parameters.require("id"), what: "task")
            let actor = context.actor ?? "unknown"
            if let dispatcher = dependencies.dispatcher {
                return try .json(try await dispatcher.cancel(taskID: id, actor: actor))
            }
            return try .json(try await dependencies.tasks.cancel(id: id, now: dependencies.now(), actor: actor).task)
        }
    }

    static func uuid(_ text: String, what: String) throws -> UUID {
        guard let id = UUID(uuidString: text) else {
            throw MusterError(.invalidInput, "'\(text)' is not a \(what) id (a UUID)")
        }
        return id
    }
}
