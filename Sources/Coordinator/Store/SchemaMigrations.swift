import Foundation
import Logging
import PostgresNIO
import Shared

/// The coordinator's schema, as numbered migrations compiled into the binary.
///
/// ``SchemaMigrations/apply(on:logger:)`` runs at boot in one transaction that first takes a transaction-level
/// advisory lock (``SchemaMigrations/advisoryLockKey``), so several coordinators starting against one database
/// apply each migration exactly once: the second waits for the first to commit and then finds nothing to do.
/// A migration is a list of statements because the extended query protocol runs one statement per query.
public enum SchemaMigrations {
    /// One schema change.
    public struct Migration: Sendable {
        public var version: Int
        public var name: String
        public var statements: [String]
    }

    /// `pg_advisory_xact_lock` key: "muster" + 1 as ASCII, so it cannot collide with the sweeper's leader lock.
    public static let advisoryLockKey: Int64 = 0x6D75_7374_6572_0001

    /// All migrations in order. Never edit a released one; append a new one.
    public static let all: [Migration] = [
        Migration(
            version: 1, name: "nodes, join tokens, certificates, audit log",
            statements: [
                // The node row is rewritten by every heartbeat flush. fillfactor 60 leaves room on each page and
                // no index covers the columns a heartbeat changes (last_seen, last_report, state, agent_version),
                // so those updates stay HOT (no index maintenance, no bloat).
                """
                CREATE TABLE nodes (
                    id uuid PRIMARY KEY,
                    hostname text NOT NULL,
                    state text NOT NULL,
                    facts jsonb NOT NULL,
                    labels jsonb NOT NULL DEFAULT '{}',
                    address text,
                    agent_version text NOT NULL,
                    token_id text,
                    joined_at timestamptz NOT NULL,
                    last_seen timestamptz,
                    last_report jsonb,
                    forgotten_at timestamptz
                ) WITH (fillfactor = 60)
                """,
                """
                CREATE TABLE join_tokens (
                    id text PRIMARY KEY,
                    secret_hash text NOT NULL,
                    created_at timestamptz NOT NULL,
                    expires_at timestamptz NOT NULL,
                    uses_allowed integer,
                    uses integer NOT NULL DEFAULT 0,
                    labels jsonb NOT NULL DEFAULT '{}',
                    revoked_at timestamptz
                )
                """,
                """
                CREATE TABLE certificates (
                    serial text PRIMARY KEY,
                    node_id uuid NOT NULL REFERENCES nodes(id),
                    issued_at timestamptz NOT NULL DEFAULT now(),
                    not_after timestamptz NOT NULL,
                    pem text NOT NULL,
                    revoked_at timestamptz
                )
                """,
                "CREATE INDEX certificates_node_id ON certificates (node_id)",
                """
                CREATE TABLE audit_log (
                    id bigserial PRIMARY KEY,
                    at timestamptz NOT NULL DEFAULT now(),
                    actor text NOT NULL,
                    action text NOT NULL,
                    target text,
                    details jsonb NOT NULL DEFAULT '{}'
                )
                """,
            ]),
        Migration(
            version: 2, name: "tasks",
            statements: [
                """
                CREATE TABLE tasks (
                    id uuid PRIMARY KEY,
                    node_id uuid NOT NULL REFERENCES nodes(id),
                    kind text NOT NULL,
                    spec jsonb NOT NULL DEFAULT '{}',
                    state text NOT NULL,
                    attempts integer NOT NULL DEFAULT 0,
                    max_attempts integer NOT NULL,
                    lease_owner text,
                    lease_expires_at timestamptz,
                    not_before timestamptz,
                    progress jsonb,
                    result jsonb,
                    error jsonb,
                    workflow_id uuid,
                    step_index integer,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    finished_at timestamptz
                )
                """,
                // Claiming reads a node's pending tasks; the lease sweep reads in-flight ones by expiry.
                "CREATE INDEX tasks_claim ON tasks (node_id, state, created_at)",
                """
                CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state IN ('assigned', 'running')
                """,
                "CREATE INDEX tasks_workflow ON tasks (workflow_id, step_index) WHERE workflow_id IS NOT NULL",
            ]),
        Migration(
            version: 3, name: "modules",
            statements: [
                // One row per published name@version; the files live under <state-dir>/modules (ModuleRepository).
                """
                CREATE TABLE modules (
                    name text NOT NULL,
                    version text NOT NULL,
                    image_digest text NOT NULL,
                    image_size bigint NOT NULL,
                    object_count integer NOT NULL,
                    object_bytes bigint NOT NULL,
                    key_id text NOT NULL,
                    descriptor jsonb NOT NULL,
                    published_by text NOT NULL,
                    published_at timestamptz NOT NULL,
                    PRIMARY KEY (name, version)
                )
                """,
                "CREATE INDEX modules_image_digest ON modules (image_digest)",
                "CREATE INDEX modules_latest ON modules (name, published_at DESC)",
            ]),
        volumesMigration,
        workflowsMigration,
    ]

    /// The newest version this binary knows.
    public static var latestVersion: Int { all.last?.version ?? 0 }

    /// Applies every migration not yet recorded in `schema_migrations`, under the advisory lock.
    /// - Returns: The versions applied by this call (empty when the schema was current).
    /// - Throws: ``MusterError`` `.databaseUnavailable` when PostgreSQL cannot be reached, `.conflict` when the
    ///   database holds a schema newer than this binary.
    @discardableResult
    public static func apply(on database: Database, logger: Logger) async throws -> [Int] {
        let migrations = all
        let latest = latestVersion
        let applied = try await database.transaction("apply schema migrations") { connection in
            try await connection.run("SELECT pg_advisory_xact_lock(\(advisoryLockKey))", logger: logger)
            try await connection.run(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """, logger: logger
            )
            var done = Set<Int>()
            for try await version in try await connection.query(
                "SELECT version FROM schema_migrations", logger: logger
            ).decode(Int.self) {
                done.insert(version)
            }
            if let newest = done.max(), newest > latest {
                throw MusterError(
                    .conflict,
                    "the database schema is at version \(newest) but this muster knows only up to \(latest)",
                    hint: "run a muster binary at least as new as the one that last migrated this database")
            }
            var appliedNow: [Int] = []
            for migration in migrations where !done.contains(migration.version) {
                for statement in migration.statements {
                    try await connection.run(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.run(
                    "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger
                )
                appliedNow.append(migration.version)
            }
            return appliedNow
        }
        if applied.isEmpty {
            logger.debug("schema is current", metadata: ["version": "\(latest)"])
        } else {
            logger.info("applied schema migrations", metadata: ["versions": "\(applied)"])
        }
        return applied
    }

    /// The highest applied version, or 0 before the first migration.
    public static func currentVersion(on database: Database, logger: Logger) async throws -> Int {
        try await database.withConnection("read the schema version") { connection in
            let rows = try await connection.query(
                """
                SELECT COALESCE(MAX(version), 0)::bigint FROM schema_migrations
                """, logger: logger)
            for try await version in rows.decode(Int.self) { return version }
            return 0
        }
    }
}
