extension SchemaMigrations {
    /// Version 5: workflows (DESIGN §4) — ordered task steps with checkpoints, e.g. `seed-cluster`. The steps and
    /// their compensations live in one jsonb column, rewritten in the transaction that creates a step's task, so
    /// a coordinator that crashes between the two never duplicates or loses a step.
    static let workflowsMigration = Migration(
        version: 5, name: "workflows",
        statements: [
            """
            CREATE TABLE workflows (
                id uuid PRIMARY KEY,
                kind text NOT NULL,
                node_id uuid NOT NULL REFERENCES nodes(id),
                fingerprint text NOT NULL,
                spec jsonb NOT NULL,
                state text NOT NULL CHECK (state IN ('running', 'failed', 'succeeded', 'rolling-back',
                                                     'rolled-back', 'rollback-failed')),
                steps jsonb NOT NULL,
                rollback jsonb,
                current_step integer NOT NULL DEFAULT 0,
                error jsonb,
                created_by text NOT NULL,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                finished_at timestamptz
            )
            """,
            // The runner's scan: only workflows with work to do.
            "CREATE INDEX workflows_active ON workflows (state) WHERE state IN ('running', 'rolling-back')",
            // At most one workflow of a kind in progress on a node (two seeds of one server would fight).
            """
            CREATE UNIQUE INDEX workflows_one_active ON workflows (node_id, kind)
                WHERE state IN ('running', 'rolling-back', 'failed', 'rollback-failed')
            """,
            "CREATE INDEX workflows_node ON workflows (node_id, created_at DESC)",
        ])
}
