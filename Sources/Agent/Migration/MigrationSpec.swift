/// Everything a SQLite → PostgreSQL migration needs; the `migrate-sqlite` command and the `migrateSQLite` task
/// both build one.
struct MigrationSpec: Sendable, Codable, Equatable {
    /// SQLite source files.
    var databases: [String]
    /// `postgres://user[:password]@host[:port]/database` (the task may fill it from coordinator credentials).
    var target: String
    /// Target schema, created if missing.
    var schema: String = "public"
    /// Only these tables (all user tables when `nil`).
    var tables: [String]?
    /// Per-column type overrides.
    var casts: [CastRule] = []
    /// Tables copied in parallel (`nil`: the number of cores).
    var jobs: Int?
    /// Drop and recreate existing target tables.
    var replace: Bool = false
    /// Plan and report, write nothing.
    var dryRun: Bool = false
    /// Migrate from an online backup copy of each source instead of the file itself.
    var snapshot: Bool = false
    /// Tables with an integer primary key and more rows than this are copied as several key ranges, each on its
    /// own connection, so a large table keeps every job busy (`nil`: ``MigrationEngine/defaultChunkRows``).
    var chunkRows: Int?

    init(
        databases: [String], target: String, schema: String = "public", tables: [String]? = nil,
        casts: [CastRule] = [], jobs: Int? = nil, replace: Bool = false, dryRun: Bool = false, snapshot: Bool = false,
        chunkRows: Int? = nil
    ) {
        self.databases = databases
        self.target = target
        self.schema = schema
        self.tables = tables
        self.casts = casts
        self.jobs = jobs
        self.replace = replace
        self.dryRun = dryRun
        self.snapshot = snapshot
        self.chunkRows = chunkRows
    }
}
