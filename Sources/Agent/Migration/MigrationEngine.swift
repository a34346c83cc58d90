import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Shared
import Synchronization

/// Migrates SQLite databases into PostgreSQL: plan, create, copy in parallel, index, constrain, reset
/// sequences, verify, report.
///
/// Library-style: the `migrate-sqlite` command and the `migrateSQLite` task both call ``run(progress:)``.
/// Errors that stop the run (usage, locked or corrupt source, unreachable target, conflicting target tables, a
/// lost connection) are thrown as ``MusterError``; per-row problems and checksum mismatches end up in the
/// returned ``MigrationReport`` (its ``MigrationReport/exitCode`` is then 1).
struct MigrationEngine: Sendable {
    /// Marker kept in the target table's comment, so a re-run knows what an earlier run left.
    static let markerPrefix = "muster-migrate-sqlite:"

    var spec: MigrationSpec
    var logger: Logger

    init(spec: MigrationSpec, logger: Logger = Logger(label: "muster.migrate-sqlite")) {
        self.spec = spec
        self.logger = logger
    }

    // MARK: - Run

    func run(progress: @escaping @Sendable (TableProgress) -> Void = { _ in }) async throws -> MigrationReport {
        let started = ContinuousClock.now
        let jobs = max(1, spec.jobs ?? ProcessInfo.processInfo.activeProcessorCount)
        guard !spec.databases.isEmpty else { throw MusterError(.usage, "no SQLite source given") }
        guard spec.jobs.map({ $0 >= 1 }) ?? true else { throw MusterError(.usage, "--jobs must be at least 1") }
        let target = try PostgresTarget(url: spec.target)
        var report = MigrationReport()
        report.dryRun = spec.dryRun

        // 1. Stamp the sources (size, mtime, inode), take snapshots if asked, read the schemas. The opening SHA-256
        //    is taken here only for a snapshot or a dry run; otherwise when the target holds a `verified:` mark to
        //    compare it with (a resumed run), or else while the copy runs (see ``execute``). The stamps, taken again
        //    at the end, cover a write in the time before the concurrent hash read the bytes it changed.
        var snapshotDir: String?
        defer { if let snapshotDir { try? FileManager.default.removeItem(atPath: snapshotDir) } }
        var plans: [TablePlan] = []
        var readPaths: [String: String] = [:]
        var stamps: [FileStamp] = []
        for path in spec.databases {
            stamps.append(try FileStamp(path))
            var source = MigrationReport.Source(
                path: path, sizeBefore: stamps[stamps.count - 1].size, sha256Before: "", snapshot: spec.snapshot)
            if spec.snapshot || spec.dryRun {
                let fp = try Self.fingerprint(path)
                source.sizeBefore = fp.size
                source.sha256Before = fp.sha256
            }
            report.sources.append(source)
            var readPath = path
            if spec.snapshot {
                let dir = snapshotDir ?? NSTemporaryDirectory() + "muster-migrate-\(UUID().uuidString.prefix(8))"
                if snapshotDir == nil {
                    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                    snapshotDir = dir
                }
                readPath = dir + "/\(report.sources.count)-" + (path as NSString).lastPathComponent
                try SQLiteDatabase.backup(source: path, destination: readPath)
            }
            readPaths[path] = readPath
            let schema = try SQLiteSchema.read(from: SQLiteDatabase(path: readPath))
            for table in schema.tables {
                if let other = plans.first(where: { $0.name == table.name }) {
                    throw MusterError(
                        .usage, "table \(table.name) exists in both \(other.sourcePath) and \(path)",
                        hint: "migrate them one at a time into different --schema")
                }
                plans.append(TablePlan(sourcePath: path, table: table, schema: spec.schema, casts: spec.casts))
            }
        }
        try validate(casts: spec.casts, plans: plans)
        if let subset = spec.tables {
            let missing = subset.filter { name in !plans.contains { $0.name == name } }
            guard missing.isEmpty else {
                throw MusterError(.usage, "no such table in the sources: \(missing.joined(separator: ", "))")
            }
            plans = plans.filter { subset.contains($0.name) }
        }
        report.warnings = plans.flatMap(\.warnings)

        // 2. Look at the target and decide per table.
        let main = try await target.connect(logger: logger)
        do {
            let result = try await execute(
                main: main, plans: plans, readPaths: readPaths, report: report, stamps: stamps, target: target,
                jobs: jobs, started: started, progress: progress)
            try? await main.close()
            return result
        } catch {
            try? await main.close()
            throw error
        }
    }

    private func execute(
        main: PostgresConnection, plans: [TablePlan], readPaths: [String: String], report initial: MigrationReport,
        stamps: [FileStamp], target: PostgresTarget, jobs: Int, started: ContinuousClock.Instant,
        progress: @escaping @Sendable (TableProgress) -> Void
    ) async throws -> MigrationReport {
        var report = initial
        var actions: [String: MigrationReport.Action] = [:]
        let trace = PhaseTrace(logger: logger, started: started)
        do {
            actions = try await decide(plans: plans, report: &report, connection: main)
        } catch let e as MusterError { throw e } catch { throw connectionLost(error, during: "inspecting the target") }
        trace("target inspected")
        // Sources still without an opening SHA-256 (no snapshot, no `verified:` mark to compare with) are hashed on
        // a thread of their own while the copy runs; the table marks written before that is done carry no hash
        // (`loading:`), the `verified:` marks at the end always do.
        let pendingPrints = report.sources.indices.filter { report.sources[$0].sha256Before.isEmpty }
        var sha = Dictionary(uniqueKeysWithValues: report.sources.map { ($0.path, $0.sha256Before) })

        for plan in plans {
            report.tables.append(
                .init(source: plan.sourcePath, table: plan.name, target: plan.qualified, action: actions[plan.name] ?? .create,
                      rowsRead: 0, ordering: plan.orderingDescription))
            if actions[plan.name] != .skip, actions[plan.name] != .loadExisting { report.ddl.append(plan.createSQL + ";") }
        }
        if spec.dryRun {
            for i in report.tables.indices { report.tables[i].rowsRead = plans[i].table.rowCount }
            report.seconds = (ContinuousClock.now - started).seconds
            return report
        }

        // 3. Create tables (serially: DDL is quick and ordering keeps errors readable).
        let toLoad = plans.filter { actions[$0.name] != .skip }
        do {
            try await main.run("CREATE SCHEMA IF NOT EXISTS \(pgQuote(spec.schema))", logger: logger)
            for plan in toLoad {
                let action = actions[plan.name] ?? .create
                if action == .reload || action == .replace {
                    try await main.run("DROP TABLE IF EXISTS \(plan.qualified) CASCADE", logger: logger)
                }
                if action != .loadExisting {
                    try await main.run(plan.createSQL, logger: logger)
                    // No autovacuum while we load: a worker that starts on a freshly copied table holds a lock
                    // that our CREATE INDEX, ALTER TABLE and COMMENT wait for until PostgreSQL cancels it, a second
                    // each (deadlock_timeout), and it scans the table while we still copy. Reset at the verdict.
                    try await main.run("ALTER TABLE \(plan.qualified) SET (autovacuum_enabled = off)", logger: logger)
                }
                try await mark(plan, "loading", sha: sha[plan.sourcePath] ?? "", connection: main)
            }
        } catch let e as MusterError { throw e } catch { throw connectionLost(error, during: "creating tables") }

        // 4. Copy, largest tables first, `jobs` chunks at a time (a large table with an integer key is split into
        //    key ranges, each copied on its own connection in its own transaction). When a table's last chunk is in,
        //    a task of its own adds the table's keys and indexes and takes the target checksum, while the copy slots
        //    move on. A table is only marked verified at the end, so an interrupted run leaves it `loading` and the
        //    next run drops and reloads it whole.
        // One thread more than copy jobs: the source hashes run beside the copies instead of delaying their reads.
        let pool = NIOThreadPool(numberOfThreads: jobs + 1)
        pool.start()
        defer { pool.shutdownGracefully { _ in } }
        var results: [String: CopyOutcome] = [:]
        // The sources' closing fingerprints, taken as soon as every chunk has been read (while the last indexes and
        // checksums run on the server) instead of after everything.
        var closingPrints: [(size: Int64, sha256: String)]?
        var openingPrints: [Int: (size: Int64, sha256: String)] = [:]
        let sourcePaths = report.sources.map(\.path)
        do {
            // Tables with the most rows first (their keys, indexes and checksums cost the server the most, so they
            // are built while later tables are copied), large ones in key-range chunks by rows and by the bytes they
            // will send (estimated from a sample), so the last units to run are small and every job stays busy.
            var sized: [(plan: TablePlan, readPath: String, ranges: [ClosedRange<Int64>?], bytes: Int64)] = []
            for plan in toLoad {
                let readPath = readPaths[plan.sourcePath] ?? plan.sourcePath
                let bytes = try Self.estimatedBytes(plan, readPath: readPath)
                let ranges = try Self.chunkRanges(
                    plan, readPath: readPath, chunkRows: spec.chunkRows ?? Self.defaultChunkRows,
                    estimatedBytes: bytes)
                sized.append((plan, readPath, ranges, bytes))
                trace("\(plan.name): ~\(bytes >> 20) MiB to send, \(ranges.count) chunks")
            }
            sized.sort { $0.plan.table.rowCount != $1.plan.table.rowCount ? $0.plan.table.rowCount > $1.plan.table.rowCount : $0.bytes > $1.bytes }
            var units: [CopyUnit] = []
            for (plan, readPath, ranges, _) in sized {
                let tally = ChunkTally(table: plan.name, total: plan.table.rowCount, chunks: ranges.count, progress: progress)
                for (k, range) in ranges.enumerated() {
                    units.append(CopyUnit(plan: plan, readPath: readPath, range: range, index: k, count: ranges.count,
                                          existing: actions[plan.name] == .loadExisting, tally: tally))
                }
            }
            trace("planned \(units.count) copy units")
            enum Step: Sendable {
                case copied(CopyUnit, TableCopier.Result)
                case finished(CopyOutcome)
                case opened([Int: (size: Int64, sha256: String)])
                case fingerprinted([(size: Int64, sha256: String)])
            }
            try await withThrowingTaskGroup(of: Step.self) { group in
                var iterator = units.makeIterator()
                var started: [String: ContinuousClock.Instant] = [:]
                var partial: [String: [Int: TableCopier.Result]] = [:]
                var copiedUnits = 0
                func addNext() {
                    guard let unit = iterator.next() else { return }
                    if started[unit.plan.name] == nil { started[unit.plan.name] = .now }
                    group.addTask {
                        .copied(unit, try await copyChunk(unit, target: target, pool: pool))
                    }
                }
                if !pendingPrints.isEmpty {
                    group.addTask {
                        .opened(try await pool.runIfActive {
                            var out: [Int: (size: Int64, sha256: String)] = [:]
                            for i in pendingPrints { out[i] = try Self.fingerprint(sourcePaths[i]) }
                            return out
                        })
                    }
                }
                for _ in 0..<jobs { addNext() }
                while let step = try await group.next() {
                    switch step {
                    case .copied(let unit, let result):
                        copiedUnits += 1
                        trace("copied \(unit.plan.name) chunk \(unit.index + 1)/\(unit.count)")
                        if copiedUnits == units.count {
                            // Every read of the sources is done (only a checksum mismatch reads one again; the
                            // fingerprints are then taken again at the end).
                            group.addTask {
                                .fingerprinted(try await pool.runIfActive { try sourcePaths.map { path throws(MusterError) in try Self.fingerprint(path) } })
                            }
                        }
                        partial[unit.plan.name, default: [:]][unit.index] = result
                        if let parts = partial[unit.plan.name], parts.count == unit.count {
                            partial[unit.plan.name] = nil
                            let merged = TableCopier.Result.merging((0..<unit.count).compactMap { parts[$0] })
                            let since = started[unit.plan.name] ?? .now
                            group.addTask {
                                .finished(try await finishTable(unit, result: merged, started: since, target: target))
                            }
                        }
                        addNext()
                    case .finished(let outcome):
                        trace("verified \(outcome.name) on the server")
                        results[outcome.name] = outcome
                    case .opened(let prints):
                        trace("opening source hashes taken")
                        openingPrints = prints
                    case .fingerprinted(let prints):
                        trace("closing source hashes taken")
                        closingPrints = prints
                    }
                }
            }
        } catch let e as MusterError { throw e } catch { throw connectionLost(error, during: "copying") }
        for (i, fp) in openingPrints {
            report.sources[i].sizeBefore = fp.size
            report.sources[i].sha256Before = fp.sha256
            sha[report.sources[i].path] = fp.sha256
        }

        // 5. Foreign keys, then sequences and the verdict per table.
        do {
            report.warnings += try await addForeignKeys(plans: toLoad, all: plans, connection: main)
            trace("foreign keys added")
            for (i, plan) in plans.enumerated() {
                guard let outcome = results[plan.name] else { continue }
                let result = outcome.result
                report.tables[i].rowsRead = result.rowsRead
                report.tables[i].errorRows = result.errorCount
                report.tables[i].bytes = result.bytes
                report.tables[i].seconds = outcome.seconds
                report.tables[i].sourceChecksum = result.checksum
                report.tables[i].targetChecksum = outcome.targetChecksum
                report.tables[i].rowsWritten = outcome.targetChecksum.rows
                report.tables[i].firstDifference = outcome.firstDifference
                report.errorRows += result.errorRows
            }
            // The verdict per table; marks go over the main connection (the sequence was set and checked by the
            // table's own finishing task). A source written to since its opening stamp gets no `verified:` mark
            // (its opening hash may already show the new bytes, and a re-run must not skip what was read before).
            let written = Set(
                report.sources.indices.filter { i in i < stamps.count && (try? FileStamp(report.sources[i].path)) != stamps[i] }
                    .map { report.sources[$0].path })
            for (i, plan) in plans.enumerated() {
                guard let outcome = results[plan.name] else { continue }
                var ok = report.tables[i].targetChecksum == report.tables[i].sourceChecksum
                if let seq = outcome.sequence {
                    report.tables[i].sequence = seq.description
                    if !seq.ok {
                        ok = false
                        report.tables[i].firstDifference =
                            report.tables[i].firstDifference ?? "sequence position differs: \(seq.description)"
                    }
                }
                report.tables[i].verified = ok
                if actions[plan.name] != .loadExisting {
                    try await main.run("ALTER TABLE \(plan.qualified) RESET (autovacuum_enabled)", logger: logger)
                }
                if ok, !written.contains(plan.sourcePath) {
                    try await mark(plan, "verified", sha: sha[plan.sourcePath] ?? "", connection: main)
                    trace("\(plan.name) marked verified")
                }
            }
        } catch let e as MusterError { throw e } catch { throw connectionLost(error, during: "verifying") }

        trace("verdicts and marks written")

        // 6. Prove the sources were not modified: the same SHA-256, and the same stamp (a write between the opening
        //    stamp and the moment the opening hash read those bytes would change the modification time).
        if results.values.contains(where: { $0.firstDifference != nil }) { closingPrints = nil }
        for i in report.sources.indices {
            let fp = try closingPrints.map { $0[i] } ?? Self.fingerprint(report.sources[i].path)
            report.sources[i].sizeAfter = fp.size
            report.sources[i].sha256After = fp.sha256
            if i < stamps.count, (try? FileStamp(report.sources[i].path)) != stamps[i] {
                report.sources[i].modifiedDuringRun = true
            }
            if !report.sources[i].unchanged && !spec.snapshot {
                report.warnings.append(
                    "source \(report.sources[i].path) changed during the migration (another process wrote to it); "
                        + "stop the service first, or use --snapshot")
            }
        }
        report.seconds = (ContinuousClock.now - started).seconds
        trace("done")
        return report
    }

    // MARK: - Steps

    /// Rows per chunk above which a table with an integer primary key is copied as several key ranges.
    static let defaultChunkRows = 200_000

    /// One unit of copy work: a whole table, or one key range of a large table.
    struct CopyUnit: Sendable {
        var plan: TablePlan
        var readPath: String
        var range: ClosedRange<Int64>?
        var index: Int
        var count: Int
        var existing: Bool
        var tally: ChunkTally
    }

    /// Sums the progress of a table's chunks into one line per table.
    final class ChunkTally: Sendable {
        let table: String
        let total: Int64
        let progress: @Sendable (TableProgress) -> Void
        private let done: Mutex<[Int: (rows: Int64, bytes: Int64)]>
        private let started = ContinuousClock.now

        init(table: String, total: Int64, chunks: Int, progress: @escaping @Sendable (TableProgress) -> Void) {
            self.table = table
            self.total = total
            self.progress = progress
            self.done = Mutex([:])
        }

        func update(chunk: Int, _ p: TableProgress) {
            let sum = done.withLock { d -> (rows: Int64, bytes: Int64) in
                d[chunk] = (p.rowsDone, p.bytes)
                return d.values.reduce((rows: Int64(0), bytes: Int64(0))) { ($0.rows + $1.rows, $0.bytes + $1.bytes) }
            }
            progress(
                TableProgress(table: table, rowsDone: sum.rows, rowsTotal: total, bytes: sum.bytes,
                              seconds: (ContinuousClock.now - started).seconds))
        }
    }

    /// Estimated COPY bytes per chunk above which a table with an integer primary key is split, so that a table of
    /// wide rows (large text, blobs) is not one long unit at the end of the run.
    static let defaultChunkBytes: Int64 = 32 << 20

    /// The key ranges a table is copied in: one (`nil`, the whole table) unless it has an integer primary key
    /// (a rowid alias) and more than `chunkRows` rows or more than `chunkBytes` estimated bytes; then equal slices of
    /// `min(key)...max(key)`, enough for both limits (at most 64).
    static func chunkRanges(
        _ plan: TablePlan, readPath: String, chunkRows: Int, estimatedBytes: Int64 = 0,
        chunkBytes: Int64 = defaultChunkBytes
    ) throws(MusterError) -> [ClosedRange<Int64>?] {
        guard chunkRows > 0, let key = plan.identityColumn else { return [nil] }
        let byRows = (plan.table.rowCount + Int64(chunkRows) - 1) / Int64(chunkRows)
        let byBytes = chunkBytes > 0 ? (estimatedBytes + chunkBytes - 1) / chunkBytes : 1
        let wanted = min(64, max(byRows, byBytes), plan.table.rowCount)
        guard wanted > 1 else { return [nil] }
        let db = try SQLiteDatabase(path: readPath)
        // Two subqueries: SQLite answers a lone min() or max() of the rowid from the b-tree's ends, but scans the
        // whole table for `SELECT min(k), max(k)`.
        let (k, t) = (quoteSQLite(key.name), quoteSQLite(plan.table.name))
        let rows = try db.rows("SELECT (SELECT min(\(k)) FROM \(t)), (SELECT max(\(k)) FROM \(t))")
        guard let r = rows.first, r.count == 2, let lo = r[0].int, let hi = r[1].int, lo < hi else { return [nil] }
        let n = wanted
        let span = hi.subtractingReportingOverflow(lo)
        guard !span.overflow, n > 1 else { return [nil] }
        let step = span.partialValue / n + 1
        var out: [ClosedRange<Int64>?] = []
        var start = lo
        while true {
            let (end, o) = start.addingReportingOverflow(step - 1)
            if o || end >= hi {
                out.append(start...hi)
                break
            }
            out.append(start...end)
            start = end + 1
        }
        return out
    }

    /// Copies one chunk on a connection of its own (its own transaction).
    private func copyChunk(_ unit: CopyUnit, target: PostgresTarget, pool: NIOThreadPool) async throws
        -> TableCopier.Result
    {
        let plan = unit.plan
        let connection = try await target.connect(logger: logger)
        do {
            let tally = unit.tally
            let chunk = unit.index
            let copier = TableCopier(
                plan: plan, readPath: unit.readPath, range: unit.range, threadPool: pool, logger: logger,
                progress: { tally.update(chunk: chunk, $0) })
            let result = try await copier.run(connection: connection)
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw describeCopyError(error, plan: plan)
        }
    }

    /// After the last chunk: keys and indexes, then the target checksum (while other tables are still copied).
    private func finishTable(
        _ unit: CopyUnit, result: TableCopier.Result, started: ContinuousClock.Instant, target: PostgresTarget
    ) async throws -> CopyOutcome {
        let plan = unit.plan
        let connection = try await target.connect(logger: logger)
        do {
            for (name, sql) in plan.indexSQL {
                if unit.existing, try await relationOrConstraintExists(name, plan: plan, connection: connection) { continue }
                try await connection.run(sql, logger: logger)
            }
            let seconds = (ContinuousClock.now - started).seconds
            let checksum = try await Verifier.targetChecksum(plan, connection: connection, logger: logger)
            var difference: String?
            if checksum != result.checksum {
                difference = try await Verifier.firstDifference(
                    plan, readPath: unit.readPath, connection: connection, logger: logger)
            }
            let sequence = try await checkSequence(plan, connection: connection)
            try await connection.close()
            return CopyOutcome(
                name: plan.name, result: result, seconds: seconds, targetChecksum: checksum, firstDifference: difference,
                sequence: sequence)
        } catch {
            try? await connection.close()
            throw describeCopyError(error, plan: plan)
        }
    }

    private func describeCopyError(_ error: any Error, plan: TablePlan) -> any Error {
        if let e = error as? MusterError { return e }
        if PostgresTarget.isConnectionLoss(error) { return connectionLost(error, during: "copying \(plan.name)") }
        return MusterError(
            .internal, "PostgreSQL refused the data of \(plan.name): \(PostgresTarget.describe(error))", cause: error)
    }

    /// What one copy job produced: the source side, timing, and the target checksum taken right after the load.
    struct CopyOutcome: Sendable {
        var name: String
        var result: TableCopier.Result
        var seconds: Double
        var targetChecksum: TableChecksum
        var firstDifference: String?
        /// The identity sequence, set and checked right after the load (`nil` without an identity column).
        var sequence: (ok: Bool, description: String)?
    }

    /// Sets the identity sequence to the highest id (or SQLite's AUTOINCREMENT counter if higher) and checks it.
    private func checkSequence(_ plan: TablePlan, connection: PostgresConnection) async throws
        -> (ok: Bool, description: String)?
    {
        guard let col = plan.identityColumn else { return nil }
        let seqName = "pg_get_serial_sequence(\(pgLiteral(plan.qualified)), \(pgLiteral(col.name)))"
        let maxRows = try await connection.strings(
            "SELECT max(\(pgQuote(col.name)))::text FROM \(plan.qualified)", logger: logger)
        let maxID = maxRows.first?.first.flatMap { $0 }.flatMap { Int64($0) }
        let floor = max(maxID ?? 0, plan.table.sequenceValue ?? 0)
        if floor > 0 {
            try await connection.run("SELECT setval(\(seqName), \(floor), true)", logger: logger)
        } else {
            try await connection.run("SELECT setval(\(seqName), 1, false)", logger: logger)
        }
        let seq = try await connection.strings(
            "SELECT (SELECT last_value FROM pg_sequences WHERE format('%I.%I', schemaname, sequencename) = \(seqName))::text",
            logger: logger)
        let last = seq.first?.first.flatMap { $0 }.flatMap { Int64($0) }
        let expected: Int64? = floor > 0 ? floor : nil
        return (last == expected, "\(col.name) next value \((expected ?? 0) + 1) (last_value \(last.map(String.init) ?? "unset"))")
    }

    private func mark(_ plan: TablePlan, _ state: String, sha: String, connection: PostgresConnection) async throws {
        let text = Self.markerPrefix + state + ":" + sha
        try await connection.run("COMMENT ON TABLE \(plan.qualified) IS \(pgLiteral(text))", logger: logger)
    }

    private func relationOrConstraintExists(_ name: String, plan: TablePlan, connection: PostgresConnection) async throws
        -> Bool
    {
        let rows = try await connection.strings(
            "SELECT 1::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "
                + "\(pgLiteral(plan.schema)) AND c.relname = \(pgLiteral(name))", logger: logger)
        return !rows.isEmpty
    }

    /// Decides what to do with every table, refusing (before any write) when a target table holds data we did
    /// not load or has other columns.
    private func decide(plans: [TablePlan], report: inout MigrationReport, connection: PostgresConnection)
        async throws -> [String: MigrationReport.Action]
    {
        let schema = pgLiteral(spec.schema)
        var comments: [String: String] = [:]
        for r in try await connection.strings(
            "SELECT c.relname::text, coalesce(obj_description(c.oid, 'pg_class'), '') FROM pg_class c "
                + "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = \(schema) AND c.relkind IN ('r', 'p')",
            logger: logger)
        {
            if let name = r[0] { comments[name] = r[1] ?? "" }
        }
        var columns: [String: [(String, String)]] = [:]
        for r in try await connection.strings(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns "
                + "WHERE table_schema = \(schema) ORDER BY table_name, ordinal_position", logger: logger)
        {
            if let t = r[0], let c = r[1], let d = r[2] { columns[t, default: []].append((c, d)) }
        }
        // A `verified:` mark is compared with the source's SHA-256, which is then needed before anything else.
        func sha(_ path: String) throws(MusterError) -> String {
            guard let i = report.sources.firstIndex(where: { $0.path == path }) else { return "" }
            if report.sources[i].sha256Before.isEmpty {
                let fp = try Self.fingerprint(path)
                report.sources[i].sizeBefore = fp.size
                report.sources[i].sha256Before = fp.sha256
            }
            return report.sources[i].sha256Before
        }
        var actions: [String: MigrationReport.Action] = [:]
        var refusals: [String] = []
        for plan in plans {
            guard let comment = comments[plan.name] else {
                actions[plan.name] = .create
                continue
            }
            if spec.replace {
                actions[plan.name] = .replace
                continue
            }
            let want = plan.columns.map { ($0.name, Self.informationSchemaType($0.type)) }
            let have = columns[plan.name] ?? []
            let sameColumns = want.count == have.count && zip(want, have).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            if comment.hasPrefix(Self.markerPrefix) {
                let state = comment.dropFirst(Self.markerPrefix.count)
                if state.hasPrefix("verified:"), sameColumns, state == "verified:" + (try sha(plan.sourcePath)) {
                    actions[plan.name] = .skip
                } else if state.hasPrefix("loading:") {
                    actions[plan.name] = .reload
                } else {
                    refusals.append(
                        "\(plan.qualified) was loaded and verified from a different version of \(plan.sourcePath)")
                }
                continue
            }
            if !sameColumns {
                let haveText = have.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
                let wantText = want.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
                refusals.append("\(plan.qualified) exists with other columns (\(haveText)); the source needs (\(wantText))")
                continue
            }
            let count = try await connection.strings("SELECT count(*)::text FROM \(plan.qualified)", logger: logger)
            if count.first?.first.flatMap({ $0 }) != "0" {
                refusals.append("\(plan.qualified) already holds rows that this tool did not load")
                continue
            }
            actions[plan.name] = .loadExisting
        }
        if !refusals.isEmpty {
            throw MusterError(
                .conflict, "refusing to touch existing target tables:\n  " + refusals.joined(separator: "\n  "),
                hint: "migrate into another --schema, or pass --replace to drop and recreate these tables")
        }
        return actions
    }

    private static func informationSchemaType(_ t: TargetType) -> String {
        switch t {
        case .timestamptz: "timestamp with time zone"
        default: t.sql
        }
    }

    /// Adds foreign keys whose both ends are in the target; rows violating one leave it `NOT VALID` with a warning.
    private func addForeignKeys(plans: [TablePlan], all: [TablePlan], connection: PostgresConnection) async throws
        -> [String]
    {
        var warnings: [String] = []
        for plan in plans {
            for (n, fk) in plan.table.foreignKeys.enumerated() {
                guard let parent = all.first(where: { $0.name == fk.parentTable }) else {
                    warnings.append("\(plan.name): foreign key to \(fk.parentTable) not created (table not migrated)")
                    continue
                }
                let parentColumns = fk.parentColumns.isEmpty ? parent.primaryKey : fk.parentColumns
                guard parentColumns.count == fk.columns.count else {
                    warnings.append("\(plan.name): foreign key to \(fk.parentTable) has no matching key; not created")
                    continue
                }
                let name = TablePlan.constraintName(plan.name, "fkey\(n + 1)")
                let exists = try await connection.strings(
                    "SELECT 1::text FROM pg_constraint WHERE conname = \(pgLiteral(name)) AND conrelid = "
                        + "\(pgLiteral(plan.qualified))::regclass", logger: logger)
                if !exists.isEmpty { continue }
                let actions = " ON UPDATE \(Self.fkAction(fk.onUpdate)) ON DELETE \(Self.fkAction(fk.onDelete))"
                try await connection.run(
                    "ALTER TABLE \(plan.qualified) ADD CONSTRAINT \(pgQuote(name)) FOREIGN KEY ("
                        + fk.columns.map(pgQuote).joined(separator: ", ") + ") REFERENCES \(parent.qualified) ("
                        + parentColumns.map(pgQuote).joined(separator: ", ") + ")" + actions + " NOT VALID",
                    logger: logger)
                do {
                    try await connection.run(
                        "ALTER TABLE \(plan.qualified) VALIDATE CONSTRAINT \(pgQuote(name))", logger: logger)
                } catch {
                    if PostgresTarget.isConnectionLoss(error) { throw error }
                    warnings.append(
                        "\(plan.name): foreign key \(name) → \(fk.parentTable) left NOT VALID: "
                            + PostgresTarget.describe(error))
                }
            }
        }
        return warnings
    }

    private static func fkAction(_ a: String) -> String {
        switch a.uppercased() {
        case "CASCADE": "CASCADE"
        case "SET NULL": "SET NULL"
        case "SET DEFAULT": "SET DEFAULT"
        case "RESTRICT": "RESTRICT"
        default: "NO ACTION"
        }
    }

    private func validate(casts: [CastRule], plans: [TablePlan]) throws(MusterError) {
        for cast in casts {
            guard let plan = plans.first(where: { $0.name == cast.table }) else {
                throw MusterError(.usage, "--cast \(cast): no table \(cast.table) in the sources")
            }
            guard plan.columns.contains(where: { $0.name == cast.column }) else {
                throw MusterError(.usage, "--cast \(cast): table \(cast.table) has no column \(cast.column)")
            }
        }
    }

    private func connectionLost(_ error: any Error, during what: String) -> MusterError {
        if PostgresTarget.isConnectionLoss(error) {
            return MusterError(
                .databaseUnavailable,
                "lost the connection to PostgreSQL while \(what): \(PostgresTarget.describe(error))",
                hint: "nothing unverified was marked done; run the same command again to resume", cause: error)
        }
        return MusterError(.internal, "PostgreSQL error while \(what): \(PostgresTarget.describe(error))", cause: error)
    }

    /// The bytes a table will send, estimated from its first rows: the average text length of each value (blobs
    /// twice, for their hex), times the row count. Used to order and split the copy, nothing else.
    static func estimatedBytes(_ plan: TablePlan, readPath: String, sampleRows: Int = 1000) throws(MusterError)
        -> Int64
    {
        guard plan.table.rowCount > 0, !plan.columns.isEmpty else { return 0 }
        let perValue = plan.columns.map { c -> String in
            let q = quoteSQLite(c.name)
            return "CASE WHEN typeof(\(q)) = 'blob' THEN 2 * length(\(q)) + 3 ELSE ifnull(length(\(q)), 2) END + 1"
        }
        let sql = "SELECT count(*), sum(" + perValue.joined(separator: " + ") + ") FROM (SELECT "
            + plan.columns.map { quoteSQLite($0.name) }.joined(separator: ", ") + " FROM " + quoteSQLite(plan.table.name)
            + " LIMIT \(sampleRows))"
        let rows = try SQLiteDatabase(path: readPath).rows(sql)
        guard let r = rows.first, r.count == 2, let n = r[0].int, n > 0, let sum = r[1].int else { return 0 }
        return Int64((Double(sum) / Double(n) * Double(plan.table.rowCount)).rounded())
    }

    // MARK: - Fingerprint

    /// What `stat` says about a source: a write changes the size or the modification time; a replaced file the
    /// inode.
    struct FileStamp: Equatable, Sendable {
        var size: Int64
        var modified: timespec
        var device: UInt64
        var inode: UInt64

        init(_ path: String) throws(MusterError) {
            var st = stat()
            guard stat(path, &st) == 0 else { throw MusterError(.usage, "cannot read SQLite source \(path)") }
            size = Int64(st.st_size)
            modified = st.st_mtim
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
        }

        static func == (a: FileStamp, b: FileStamp) -> Bool {
            a.size == b.size && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
                && a.device == b.device && a.inode == b.inode
        }
    }

    /// Logs the run's phases with the time since the start (`debug`; the command shows them with
    /// `MUSTER_LOG_LEVEL=debug`).
    struct PhaseTrace {
        var logger: Logger
        var started: ContinuousClock.Instant

        func callAsFunction(_ what: @autoclosure () -> String) {
            logger.debug("\(String(format: "%7.3f", (ContinuousClock.now - started).seconds)) s  \(what())")
        }
    }

    /// Size and SHA-256 of a file, read in 1 MiB chunks.
    static func fingerprint(_ path: String) throws(MusterError) -> (size: Int64, sha256: String) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw MusterError(.usage, "cannot read SQLite source \(path)")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: Int64 = 0
        while true {
            let chunk: Data
            do { chunk = try handle.read(upToCount: 1 << 20) ?? Data() } catch {
                throw MusterError(.io, "cannot read \(path): \(error)")
            }
            if chunk.isEmpty { break }
            size += Int64(chunk.count)
            hasher.update(data: chunk)
        }
        return (size, hasher.finalize().map { String(format: "%02x", $0) }.joined())
    }
}
