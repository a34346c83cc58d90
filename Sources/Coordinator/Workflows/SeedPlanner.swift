import Crypto
import Foundation
import Shared

/// Turns a seed profile into the `seed-cluster` workflow's steps (DESIGN §8, issue 6): precheck → backup → pre-copy
/// each directory (service still running) → stop → migrate each database → copy each directory again (the delta) →
/// rewrite paths → edit config → start → wait for health → verify.
///
/// Every step is one idempotent task on the standalone node. The compensations a rollback runs are attached to
/// the steps they undo: stopping the service is undone by starting it again (after the restores), the config edit
/// and the in-place JSON rewrites by restoring their `.pre-cluster` backups. The migrated tables and the copies on
/// the volume are left for inspection.
public enum SeedPlanner {
    /// `POST /v1/workflows/seed-cluster` body.
    public struct Request: Codable, Sendable, Equatable {
        public var node: String
        public var profile: SeedProfile
        /// Migrate into target tables that already hold rows (they are replaced).
        public var replace: Bool?
        /// Answer with the plan only.
        public var dryRun: Bool?

        public init(node: String, profile: SeedProfile, replace: Bool? = nil, dryRun: Bool? = nil) {
            self.node = node
            self.profile = profile
            self.replace = replace
            self.dryRun = dryRun
        }
    }

    /// The answer: the workflow (absent for a dry run), what happened, and the plan with its rollback.
    public struct Response: Codable, Sendable, Equatable {
        /// `created`, `already-done`, `resumed`, or `dry-run`.
        public var outcome: String
        public var workflow: WorkflowRecord?
        public var plan: [WorkflowStep]
        /// What a rollback would run if every step had started.
        public var rollback: [WorkflowStep]
    }

    public static let workflowKind = "seed-cluster"
    /// Suffix of the backups `editConfig` and `rewriteJSONPaths` keep next to the files they change.
    public static let backupSuffix = ".pre-cluster"

    /// The request's identity: the same node, profile and options give the same fingerprint.
    public static func fingerprint(nodeID: UUID, profile: SeedProfile, replace: Bool) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var data = Data(nodeID.uuidString.lowercased().utf8)
        data.append(try encoder.encode(profile))
        data.append(replace ? 1 : 0)
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// The steps for a profile.
    /// - Parameter backupName: Where the node keeps its backups (`<agent state>/backups/<name>`).
    public static func plan(profile: SeedProfile, replace: Bool, backupName: String) throws -> [WorkflowStep] {
        try profile.validate(source: "profile")
        let unit = profile.service.unit
        let databases = profile.databases ?? []
        let directories = profile.directories ?? []
        let rewrites = profile.rewrites ?? []
        let mountPath = profile.volume?.mountPath

        func destination(_ directory: SeedProfile.Directory) -> String {
            (mountPath ?? "") + "/" + directory.destination
        }
        func rewriteSpec(_ rewrite: SeedProfile.Rewrite, dryRun: Bool = false, restore: Bool = false) throws
            -> JSONValue
        {
            var spec: [String: JSONValue] = [
                "files": .array(rewrite.files.map { .string($0) }),
                "rewrites": try JSONValue(encoding: rewrite.prefixes),
                "backupSuffix": .string(backupSuffix),
            ]
            if let fields = rewrite.fields { spec["fields"] = .array(fields.map { .string($0) }) }
            if dryRun { spec["dryRun"] = .bool(true) }
            if restore { spec["restore"] = .bool(true) }
            return .object(spec)
        }
        func configSpec(_ config: SeedProfile.Config, dryRun: Bool = false, restore: Bool = false) -> JSONValue {
            var spec: [String: JSONValue] = [
                "file": .string(config.file), "format": .string(config.format.rawValue),
                "set": .object(config.set), "backupSuffix": .string(backupSuffix),
            ]
            if let expect = config.expect { spec["expect"] = .object(expect) }
            if dryRun { spec["dryRun"] = .bool(true) }
            if restore { spec["restore"] = .bool(true) }
            return .object(spec)
        }
        func migrateSpec(_ database: SeedProfile.Database) throws -> [String: JSONValue] {
            guard let target = database.target else {
                throw MusterError(
                    .invalidInput,
                    "profile: databases: \(database.path) has no target, and this coordinator does not hand out "
                        + "PostgreSQL credentials of its own",
                    hint: "give each database a target: postgres://USER@HOST:PORT/DB")
            }
            var spec: [String: JSONValue] = [
                "databases": .array([.string(database.path)]), "target": .string(target),
                "replace": .bool(replace),
            ]
            if let schema = database.schema { spec["schema"] = .string(schema) }
            if let tables = database.tables { spec["tables"] = .array(tables.map { .string($0) }) }
            if let casts = database.casts { spec["casts"] = .array(casts.map { .string($0) }) }
            return spec
        }
        let health: JSONValue = .object(["http": .array([.string(profile.service.healthURL)])])
        let healthWait = profile.service.healthTimeoutSeconds ?? 60

        // Compensations.
        let stopAgain = WorkflowStep(
            name: "stop \(unit)", kind: .controlUnit,
            spec: .object(["unit": .string(unit), "action": .string("stop")]), maxAttempts: 3, order: 0)
        let startStandalone = WorkflowStep(
            name: "start \(unit) (standalone)", kind: .controlUnit,
            spec: .object(["unit": .string(unit), "action": .string("start")]), maxAttempts: 3, order: 2)
        let standaloneHealthy = WorkflowStep(
            name: "wait until standalone \(unit) is healthy", kind: .checkHealth,
            spec: withWait(health, seconds: healthWait), maxAttempts: 2, order: 3)

        var steps: [WorkflowStep] = []

        // 1. Prechecks: read-only, everything at once.
        var precheck: [String: JSONValue] = [
            "unit": .string(unit),
            "readable": .array(
                (databases.map(\.path) + directories.map(\.source) + (profile.config.map { [$0.file] } ?? []))
                    .map { .string($0) }),
        ]
        if let volume = profile.volume {
            precheck["volume"] = .object([
                "mountPath": .string(volume.mountPath),
                "spaceFor": .array(directories.map { .string($0.source) }),
            ])
        }
        if let config = profile.config { precheck["config"] = configSpec(config, dryRun: true) }
        if !rewrites.isEmpty { precheck["rewrites"] = .array(try rewrites.map { try rewriteSpec($0, dryRun: true) }) }
        if !databases.isEmpty {
            precheck["postgres"] = .array(try databases.map { .object(try migrateSpec($0)) })
        }
        steps.append(WorkflowStep(name: "precheck", kind: .precheck, spec: .object(precheck), maxAttempts: 2))

        // 2. Backups: SQLite online-backup copies and the config, with sha256.
        steps.append(
            WorkflowStep(
                name: "backup", kind: .backup,
                spec: .object([
                    "name": .string(backupName), "sqlite": .array(databases.map { .string($0.path) }),
                    "files": .array((profile.config.map { [$0.file] } ?? []).map { .string($0) }),
                ]), maxAttempts: 2))

        // 3. Pre-copy each directory while the service still runs: the copy inside the window then only moves
        //    what changed since (rsync's delta), which keeps the downtime short.
        for directory in directories {
            var spec: [String: JSONValue] = [
                "source": .string(directory.source), "destination": .string(destination(directory)),
            ]
            if let exclude = directory.exclude { spec["excludes"] = .array(exclude.map { .string($0) }) }
            steps.append(
                WorkflowStep(
                    name: "pre-copy \(directory.source) → \(destination(directory)) (service running)",
                    kind: .syncTree, spec: .object(spec), maxAttempts: 3))
        }

        // 4. Stop: the maintenance window opens.
        steps.append(
            WorkflowStep(
                name: "stop \(unit)", kind: .controlUnit,
                spec: .object(["unit": .string(unit), "action": .string("stop")]), maxAttempts: 3, window: .opens,
                undo: [stopAgain, startStandalone, standaloneHealthy]))

        // 5. Migrate each database (a re-run resumes verified tables).
        for database in databases {
            steps.append(
                WorkflowStep(
                    name: "migrate \(database.path)", kind: .migrateSQLite, spec: .object(try migrateSpec(database)),
                    maxAttempts: 3))
        }

        // 6. Copy each directory to the volume again, now that the service is stopped: what changed since the
        //    pre-copy (rsync; a re-run copies what is missing).
        for directory in directories {
            var spec: [String: JSONValue] = [
                "source": .string(directory.source), "destination": .string(destination(directory)),
                "verify": .string("sample"),
            ]
            if let exclude = directory.exclude { spec["excludes"] = .array(exclude.map { .string($0) }) }
            steps.append(
                WorkflowStep(
                    name: "copy \(directory.source) → \(destination(directory))", kind: .syncTree, spec: .object(spec),
                    maxAttempts: 3))
        }

        // 7. Rewrite paths (backups kept as .pre-cluster; restored by a rollback).
        for (index, rewrite) in rewrites.enumerated() {
            let name = rewrites.count == 1 ? "rewrite paths" : "rewrite paths (\(index + 1))"
            steps.append(
                WorkflowStep(
                    name: name, kind: .rewriteJSONPaths, spec: try rewriteSpec(rewrite), maxAttempts: 2,
                    undo: [
                        WorkflowStep(
                            name: "restore \(name)", kind: .rewriteJSONPaths,
                            spec: try rewriteSpec(rewrite, restore: true), maxAttempts: 2, order: 1)
                    ]))
        }

        // 8. Config for cluster mode.
        if let config = profile.config {
            steps.append(
                WorkflowStep(
                    name: "edit \(config.file)", kind: .editConfig, spec: configSpec(config), maxAttempts: 2,
                    undo: [
                        WorkflowStep(
                            name: "restore \(config.file)", kind: .editConfig, spec: configSpec(config, restore: true),
                            maxAttempts: 2, order: 1)
                    ]))
        }

        // 9. Start in cluster mode; 10. health within the timeout; 11. the profile's checks.
        steps.append(
            WorkflowStep(
                name: "start \(unit)", kind: .controlUnit,
                spec: .object(["unit": .string(unit), "action": .string("restart")]), maxAttempts: 2,
                undo: [stopAgain]))
        steps.append(contentsOf: verificationSteps(profile: profile, unit: unit))
        return steps
    }

    /// Health within the profile's timeout, then the profile's checks; the last closes the maintenance window.
    ///
    /// Both get more than one attempt although a failed check is final: `verificationFailed` is never retried
    /// (``TaskRetryPolicy``), so the extra attempts only serve a task whose lease expired because the agent died or
    /// restarted mid-step (the check is read-only and runs again); with one attempt that failed the workflow.
    static func verificationSteps(profile: SeedProfile, unit: String) -> [WorkflowStep] {
        let health: JSONValue = .object(["http": .array([.string(profile.service.healthURL)])])
        let checks = profile.checks ?? []
        return [
            WorkflowStep(
                name: "wait until \(unit) is healthy", kind: .checkHealth,
                spec: withWait(health, seconds: profile.service.healthTimeoutSeconds ?? 60), maxAttempts: 3),
            WorkflowStep(
                name: "verify (\(checks.count) checks)", kind: .checkHealth,
                spec: withWait(
                    .object([
                        "requests": .array(
                            checks.map { check in
                                var request: [String: JSONValue] = [
                                    "name": .string(check.name), "url": .string(check.url),
                                    "status": .number(Double(check.status ?? 200)),
                                ]
                                if let json = check.json { request["json"] = .object(json) }
                                return .object(request)
                            })
                    ]), seconds: 10), maxAttempts: 3, window: .closes),
        ]
    }

    private static func withWait(_ spec: JSONValue, seconds: Int) -> JSONValue {
        guard case .object(var object) = spec else { return spec }
        object["waitSeconds"] = .number(Double(seconds))
        object["timeoutMilliseconds"] = .number(5000)
        return .object(object)
    }
}
