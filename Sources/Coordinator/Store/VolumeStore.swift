import Foundation
import Logging
import PostgresNIO
import Shared

/// A volume as `muster volume ls` shows it: the spec, and per node what the operator asked for, the latest task
/// doing it and what the node's last health report says.
public struct VolumeView: Codable, Sendable, Equatable {
    public struct Attachment: Codable, Sendable, Equatable {
        public var node: UUID
        /// `attached` or `detached`: what the operator asked for last.
        public var desired: String
        public var taskID: UUID?
        public var taskState: TaskState?
        public var taskError: TaskFailure?
        /// The volume in the node's last health report (`nil` when the report does not mention it).
        public var status: VolumeStatus?
    }

    public var name: String
    public var type: VolumeType
    public var server: String?
    public var source: String
    public var options: [String]
    public var mountPath: String
    public var createdAt: Date
    public var attachments: [Attachment]

    public var spec: VolumeSpec {
        VolumeSpec(name: name, type: type, server: server, source: source, options: options, mountPath: mountPath)
    }
}

/// What `attach` / `detach` did on one node.
public struct VolumeChange: Codable, Sendable, Equatable {
    public var volume: String
    public var node: UUID
    /// `attach` or `detach`.
    public var action: String
    /// The task created, or the existing one that already does it; `nil` when there was nothing to do.
    public var task: TaskRecord?
    /// `created`, `inProgress`, `alreadyDone` or `notAttached`.
    public var outcome: String
}

/// Volumes and their attachments in PostgreSQL (migration 4). Attaching and detaching create `mountVolume` /
/// `unmountVolume` tasks through ``TaskStore``; both are idempotent on the agent, and the store adds no second
/// task while one for the same change is still pending, running or has succeeded.
public struct VolumeStore: Sendable {
    let database: Database
    let tasks: TaskStore
    let logger: Logger

    public init(database: Database, tasks: TaskStore, logger: Logger) {
        self.database = database
        self.tasks = tasks
        self.logger = logger
    }

    /// Stores a new volume.
    /// - Throws: ``MusterError`` `.invalidInput` (spec), `.conflict` (name or mount path taken).
    public func create(_ spec: VolumeSpec, now: Date, actor: String) async throws -> VolumeView {
        try spec.validate()
        let logger = self.logger
        let options = try MusterJSON.string(spec.options)
        try await database.transaction("create a volume") { connection in
            let taken = try await connection.query(
                "SELECT name FROM volumes WHERE name = \(spec.name) OR mount_path = \(spec.mountPath)", logger: logger)
            for try await name in taken.decode(String.self) {
                throw MusterError(
                    .conflict,
                    name == spec.name
                        ? "a volume named \(spec.name) exists already"
                        : "volume \(name) already uses the mount path \(spec.mountPath)",
                    hint: "`muster volume ls` lists the volumes")
            }
            try await connection.run(
                """
                INSERT INTO volumes (name, type, server, source, options, mount_path, created_at)
                VALUES (\(spec.name), \(spec.type.rawValue), \(spec.server), \(spec.source), \(options)::jsonb,
                        \(spec.mountPath), \(now))
                """, logger: logger)
            try await AuditLog.record(
                on: connection, actor: actor, action: "volume.create", target: spec.name,
                details: ["type": spec.type.rawValue, "mountPath": spec.mountPath], logger: logger)
        }
        return try await show(name: spec.name)
    }

    /// Every volume with its attachments, by name.
    public func list() async throws -> [VolumeView] {
        let logger = self.logger
        return try await database.withConnection("list volumes") { connection in
            var volumes: [VolumeView] = []
            let rows = try await connection.query(
                "SELECT name, type, server, source, options::text, mount_path, created_at FROM volumes ORDER BY name",
                logger: logger)
            for try await (name, type, server, source, options, mountPath, createdAt) in rows.decode(
                (String, String, String?, String, String, String, Date).self)
            {
                volumes.append(
                    VolumeView(
                        name: name, type: VolumeType(rawValue: type) ?? .bind, server: server, source: source,
                        options: try MusterJSON.decode([String].self, from: options), mountPath: mountPath,
                        createdAt: createdAt, attachments: []))
            }
            let attachments = try await connection.query(
                """
                SELECT a.volume_name, a.node_id, a.desired, a.task_id, t.state, t.error::text,
                       (n.last_report -> 'volumes')::text
                FROM volume_attachments a
                LEFT JOIN tasks t ON t.id = a.task_id
                JOIN nodes n ON n.id = a.node_id
                ORDER BY a.volume_name, a.node_id
                """, logger: logger)
            for try await (volume, node, desired, taskID, taskState, errorText, reported) in attachments.decode(
                (String, UUID, String, UUID?, String?, String?, String?).self)
            {
                let statuses = reported.flatMap { try? MusterJSON.decode([VolumeStatus].self, from: $0) } ?? []
                guard let index = volumes.firstIndex(where: { $0.name == volume }) else { continue }
                volumes[index].attachments.append(
                    .init(
                        node: node, desired: desired, taskID: taskID, taskState: taskState.flatMap(TaskState.init),
                        taskError: try errorText.map { try MusterJSON.decode(TaskFailure.self, from: $0) },
                        status: statuses.first { $0.name == volume }))
            }
            return volumes
        }
    }

    /// One volume.
    /// - Throws: ``MusterError`` `.notFound`.
    public func show(name: String) async throws -> VolumeView {
        guard let volume = try await list().first(where: { $0.name == name }) else {
            throw MusterError(.notFound, "there is no volume named \(name)", hint: "`muster volume ls` lists them")
        }
        return volume
    }

    /// Mounts the volume on `nodes` (`nil`: every node that is not forgotten) through `mountVolume` tasks.
    public func attach(name: String, nodes: [UUID]?, now: Date, actor: String) async throws -> [VolumeChange] {
        try await change(name: name, nodes: nodes, attach: true, now: now, actor: actor)
    }

    /// Unmounts the volume from `nodes` (`nil`: every node it is attached to) through `unmountVolume` tasks. A node
    /// the volume is not attached to is a no-op (`notAttached`).
    public func detach(name: String, nodes: [UUID]?, now: Date, actor: String) async throws -> [VolumeChange] {
        try await change(name: name, nodes: nodes, attach: false, now: now, actor: actor)
    }

    private func change(name: String, nodes: [UUID]?, attach: Bool, now: Date, actor: String) async throws
        -> [VolumeChange]
    {
        let volume = try await show(name: name)
        let targets: [UUID]
        if let nodes {
            targets = nodes
        } else if attach {
            targets = try await database.withConnection("list nodes for a volume") { connection in
                var ids: [UUID] = []
                let rows = try await connection.query(
                    "SELECT id FROM nodes WHERE state <> 'forgotten' ORDER BY joined_at", logger: logger)
                for try await id in rows.decode(UUID.self) { ids.append(id) }
                return ids
            }
        } else {
            targets = volume.attachments.filter { $0.desired == "attached" }.map(\.node)
        }
        let action = attach ? "attach" : "detach"
        let desired = attach ? "attached" : "detached"
        var changes: [VolumeChange] = []
        for node in targets {
            let current = volume.attachments.first { $0.node == node }
            if !attach && current?.desired != "attached" {
                changes.append(
                    VolumeChange(volume: name, node: node, action: action, task: nil, outcome: "notAttached"))
                continue
            }
            if let current, current.desired == desired, let taskID = current.taskID, let state = current.taskState,
                state != .failed && state != .cancelled
            {
                let task = try await tasks.show(id: taskID)
                changes.append(
                    VolumeChange(
                        volume: name, node: node, action: action, task: task,
                        outcome: state == .succeeded ? "alreadyDone" : "inProgress"))
                continue
            }
            let spec: JSONValue =
                attach
                ? try JSONValue(encoding: volume.spec)
                : try JSONValue(encoding: UnmountVolumeSpec(name: name, mountPath: volume.mountPath))
            let task = try await tasks.create(
                nodeID: node, kind: attach ? .mountVolume : .unmountVolume, spec: spec, now: now, actor: actor)
            let logger = self.logger
            try await database.transaction("record a volume attachment") { connection in
                try await connection.run(
                    """
                    INSERT INTO volume_attachments (volume_name, node_id, desired, task_id, updated_at)
                    VALUES (\(name), \(node), \(desired), \(task.id), \(now))
                    ON CONFLICT (volume_name, node_id)
                    DO UPDATE SET desired = EXCLUDED.desired, task_id = EXCLUDED.task_id, updated_at = EXCLUDED.updated_at
                    """, logger: logger)
                try await AuditLog.record(
                    on: connection, actor: actor, action: "volume.\(action)", target: name,
                    details: ["node": node.uuidString.lowercased(), "task": task.id.uuidString.lowercased()],
                    logger: logger)
            }
            changes.append(VolumeChange(volume: name, node: node, action: action, task: task, outcome: "created"))
        }
        return changes
    }
}
