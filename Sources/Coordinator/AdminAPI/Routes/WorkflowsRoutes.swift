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
            return try await start(
                kind: SeedPlanner.workflowKind, nodeID: nodeID, fingerprint: fingerprint,
                spec: try JSONValue(encoding: input), steps: steps, dryRun: input.dryRun == true, context: context)
        }
        group.post("cluster/apply") { request, context -> Response in
            let input = try await VolumesRoutes.decode(
                ClusterApplyPlanner.Request.self, request, example: #"{"node": "<node id>"}"#)
            let nodeID = try TasksRoutes.uuid(input.node, what: "node")
            _ = try await dependencies.nodes.show(id: nodeID)
            let seed = try await seedWorkflow(input.seed)
            let profile = try seed.spec.decode(SeedPlanner.Request.self).profile
            let seedID = seed.id.uuidString.lowercased()
            var volume: VolumeSpec?
            if let name = profile.volume?.name {
                do {
                    volume = try await dependencies.volumes.show(name: name).spec
                } catch let error as MusterError where error.code == .notFound {
                    throw MusterError(
                        .conflict, "the seed profile's volume '\(name)' is not registered with this coordinator",
                        hint: "register it once: `muster volume create \(name) --type nfs4 --server HOST --source EXPORT "
                            + "--mount \(profile.volume?.mountPath ?? "PATH")`")
                }
            }
            var module: AttachModuleSpec?
            if let reference = profile.module {
                guard let modules = dependencies.modules else {
                    throw MusterError(.notFound, "this coordinator does not serve modules")
                }
                let parts = reference.split(separator: "@", maxSplits: 1).map(String.init)
                let record = try await modules.store.find(name: parts[0], version: parts.count > 1 ? parts[1] : nil)
                module = AttachModuleSpec(name: record.name, version: record.version, imageDigest: record.imageDigest)
            }
            let steps = try ClusterApplyPlanner.plan(profile: profile, volume: volume, module: module)
            return try await start(
                kind: ClusterApplyPlanner.workflowKind, nodeID: nodeID,
                fingerprint: try ClusterApplyPlanner.fingerprint(nodeID: nodeID, seed: seed.id, steps: steps),
                spec: .object(["seed": .string(seedID), "node": .string(input.node.lowercased())]), steps: steps,
                dryRun: input.dryRun == true, context: context)
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

    /// Answers with the plan (dry run), or starts the workflow — or finds the one that already did the same.
    private func start(
        kind: String, nodeID: UUID, fingerprint: String, spec: JSONValue, steps: [WorkflowStep], dryRun: Bool,
        context: AdminRequestContext
    ) async throws -> Response {
        // What a rollback would run if every step had started.
        let fullRollback = WorkflowRecord.compensations(
            of: steps.map { step in
                var started = step
                started.epoch = 1
                return started
            })
        if dryRun {
            return try .json(SeedPlanner.Response(outcome: "dry-run", workflow: nil, plan: steps, rollback: fullRollback))
        }
        let (workflow, outcome) = try await dependencies.workflows.start(
            kind: kind, nodeID: nodeID, fingerprint: fingerprint, spec: spec, steps: steps, now: dependencies.now(),
            actor: context.actor ?? "unknown")
        dependencies.wakeWorkflows()
        return try .json(
            SeedPlanner.Response(
                outcome: outcome.rawValue, workflow: workflow, plan: workflow.steps, rollback: fullRollback),
            status: outcome == .created ? .created : .ok)
    }

    /// The seed-cluster workflow a `cluster apply` copies: the one named, or the newest that succeeded.
    private func seedWorkflow(_ id: String?) async throws -> WorkflowRecord {
        if let id {
            let workflow = try await dependencies.workflows.show(id: try TasksRoutes.uuid(id, what: "workflow"))
            guard workflow.kind == SeedPlanner.workflowKind, workflow.state == .succeeded else {
                throw MusterError(
                    .conflict, "workflow \(id) is a \(workflow.kind) workflow that is \(workflow.state.rawValue); "
                        + "cluster apply needs a seed-cluster that succeeded")
            }
            return workflow
        }
        guard
            let seed = try await dependencies.workflows.list().first(where: {
                $0.kind == SeedPlanner.workflowKind && $0.state == .succeeded
            })
        else {
            throw MusterError(
                .conflict, "no seed-cluster workflow has succeeded yet: there is no cluster to apply",
                hint: "run `muster seed-cluster --node STANDALONE --profile seed.yaml` first")
        }
        return seed
    }
}
