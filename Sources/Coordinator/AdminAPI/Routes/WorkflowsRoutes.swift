import Foundation
import Hummingbird
import Shared

/// `POST /v1/workflows/seed-cluster`, `GET /v1/workflows[?node=ID]`, `GET /v1/workflows/{id}`,
/// `POST /v1/workflows/{id}/resume`, `POST /v1/workflows/{id}/rollback`.
struct WorkflowsRoutes {
    let dependencies: AdminDependencies

    func register(on group: RouterGroup<AdminRequestContext>) {
        group.post("workflows/seed-cluster") { request, context -> Response in
            let input = try await VolumesRoutes.decode(
                SeedPlanner.Request.self, request,
                example: #"{"node": "<node id>", "profile": {"service": {"unit": "app.service", "healthURL": "http://127.0.0.1:8080/health"}}}"#
            )
            let nodeID = try TasksRoutes.uuid(input.node, what: "node")
            _ = try await dependencies.nodes.show(id: nodeID)
            let replace = input.replace ?? false
            let fingerprint = try SeedPlanner.fingerprint(nodeID: nodeID, profile: input.profile, replace: replace)
            let steps = try SeedPlanner.plan(
                profile: input.profile, replace: replace, backupName: "seed-" + fingerprint.prefix(16))
            let fullRollback = WorkflowRecord.compensations(
                of: steps.map { step in
                    var started = step
                    started.epoch = 1
                    return started
                })
            if input.dryRun == true {
                return try .json(SeedPlanner.Response(outcome: "dry-run", workflow: nil, plan: steps, rollback: fullRollback))
            }
            let (workflow, outcome) = try await dependencies.workflows.start(
                kind: SeedPlanner.workflowKind, nodeID: nodeID, fingerprint: fingerprint,
                spec: try JSONValue(encoding: input), steps: steps, now: dependencies.now(),
                actor: context.actor ?? "unknown")
            dependencies.wakeWorkflows()
            return try .json(
                SeedPlanner.Response(
                    outcome: outcome.rawValue, workflow: workflow, plan: workflow.steps, rollback: fullRollback),
                status: outcome == .created ? .created : .ok)
        }
        group.get("workflows") { request, _ -> Response in
            let node = try request.uri.queryParameters.get("node").map { try TasksRoutes.uuid($0, what: "node") }
            return try .json(try await dependencies.workflows.list(nodeID: node))
        }
        group.get("workflows/{id}") { _, context -> Response in
            let id = try TasksRoutes.uuid(context.parameters.require("id"), what: "workflow")
            return try .json(try await dependencies.workflows.show(id: id))
        }
        group.post("workflows/{id}/resume") { _, context -> Response in
            let id = try TasksRoutes.uuid(context.parameters.require("id"), what: "workflow")
            let workflow = try await dependencies.workflows.resume(
                id: id, now: dependencies.now(), actor: context.actor ?? "unknown")
            dependencies.wakeWorkflows()
            return try .json(workflow)
        }
        group.post("workflows/{id}/rollback") { _, context -> Response in
            let id = try TasksRoutes.uuid(context.parameters.require("id"), what: "workflow")
            let workflow = try await dependencies.workflows.rollback(
                id: id, now: dependencies.now(), actor: context.actor ?? "unknown")
            dependencies.wakeWorkflows()
            return try .json(workflow)
        }
    }
}
