extension SchemaMigrations {
    /// Version 4: volumes and their per-node attachments (DESIGN §6). Independent of every other migration
    /// after version 2 (it references only `nodes` and `tasks`).
    static let volumesMigration = Migration(
        version: 4, name: "volumes",
        statements: [
            """
            CREATE TABLE volumes (
                name text PRIMARY KEY,
                type text NOT NULL CHECK (type IN ('nfs', 'nfs4', 'bind')),
                server text,
                source text NOT NULL,
                options jsonb NOT NULL DEFAULT '[]',
                mount_path text NOT NULL UNIQUE,
                created_at timestamptz NOT NULL
            )
            """,
            // One row per (volume, node) ever attached: what the operator wants and the latest task doing it.
            """
            CREATE TABLE volume_attachments (
                volume_name text NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
                node_id uuid NOT NULL REFERENCES nodes(id),
                desired text NOT NULL CHECK (desired IN ('attached', 'detached')),
                task_id uuid REFERENCES tasks(id),
                updated_at timestamptz NOT NULL,
                PRIMARY KEY (volume_name, node_id)
            )
            """,
        ])
}
