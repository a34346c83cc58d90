import Foundation
import Hummingbird
import Shared

/// `GET /v1/nodes[?all=true]`, `GET /v1/nodes/{id}`, `DELETE /v1/nodes/{id}` (forget).
struct NodesRoutes {
    let dependencies: AdminDependencies

    func register(on group: RouterGroup<AdminRequestContext>) {
        group.get("nodes") { request, _ -> Response in
            let all = request.uri.queryParameters.get("all") == "true"
            return try .json(try await dependencies.nodes.list(includeForgotten: all))
        }
        group.get("nodes/{id}") { _, context -> Response in
            try .json(try await dependencies.nodes.show(id: try nodeID(context)))
        }
        group.delete("nodes/{id}") { _, context -> Response in
            let id = try nodeID(context)
            let view = try await dependencies.nodes.forget(
                id: id, now: dependencies.now(), actor: context.actor ?? "unknown")
            // Its certificate is revoked in the store; a live session must not outlast that.
            await dependencies.disconnect(id)
            return try .json(view)
        }
    }

    private func nodeID(_ context: AdminRequestContext) throws -> UUID {
        let text = try context.parameters.require("id")
        guard let id = UUID(uuidString: text) else {
            throw MusterError(.invalidInput, "'\(text)' is not a node id (a UUID)", hint: "`muster nodes` lists them")
        }
        return id
    }
}
