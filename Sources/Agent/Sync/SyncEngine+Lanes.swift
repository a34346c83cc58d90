import CXattr
import Foundation
import Logging
import Shared
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A first copy in lanes: several rsync processes at once, each copying whole top-level entries of the source.
///
/// One rsync copies a tree of many small files one file after another: it waits for each file's blocks to come off
/// the disk, and its three processes (sender, generator, receiver) leave much of two cores idle while it waits. A
/// first copy (nothing at the destination, nothing to compare or delete) is therefore split by top-level entry into
/// *jobs*, and `copyLanes` lanes take the jobs heaviest first, each lane one rsync at a time:
///
/// - a top-level directory is one job: rsync with the usual options from `SRC/name/` to `DEST/name/`, exactly as one
///   rsync over the whole tree would copy that directory (its own attributes included);
/// - the entries holding a hard-linked file, the top-level entries that are not directories and those whose names
///   are not valid UTF-8 form one job: the usual options plus `--files-from=- --from0 --recursive` over `SRC/` with
///   their names on standard input, so `-H` still links every name;
/// - with excludes, every entry is such a `--files-from` job of its own, so patterns keep matching from the source's
///   root (anchored ones included).
///
/// `--files-from` is not used for the plain directories because it costs: on the benchmark tree (108k files, cold,
/// a fresh ext4) four lanes of `--files-from` took 1.1–1.2 × one bare `rsync -a`, four lanes of one rsync per
/// directory 0.8–1.1 ×. The jobs start only after the source walk and the free-space precheck, so a refused
/// precheck copies nothing; the walk runs on 8 threads (cold, it waits on the disk) and leaves the cache warm for
/// rsync's own file lists. When the jobs are done, one more rsync with `--exclude=*` sets the destination root's own
/// attributes (mode, owner, times, ACLs, xattrs), which the writes into it would otherwise leave at the time of the
/// copy. Re-runs are not done in lanes: they go through the change journal, or one rsync over the whole tree.
extension SyncEngine {
    /// One top-level entry of the source.
    struct TopEntry: Sendable {
        var name: [UInt8]
        var stat: FileStat
    }

    /// One rsync of a first copy in lanes.
    struct LaneJob: Sendable, Equatable {
        /// The top-level names it copies.
        var names: [[UInt8]]
        /// The one directory it copies as `SRC/name/` → `DEST/name/` (a valid UTF-8 name); `nil`: the names go
        /// through `--files-from=-`.
        var directory: String?
        /// Bytes plus ``laneEntryWeight`` per entry: the order the lanes take the jobs in (heaviest first).
        var weight: UInt64
        /// Entries the job's rsync lists (its `to-chk` total), for progress before it starts.
        var entries: Int

        /// One directory copied alone.
        var alone: Bool { directory != nil }
    }

    /// What the walk found out about one top-level entry the excludes keep.
    struct WalkedTop: Sendable {
        var name: [UInt8]
        var isDirectory: Bool
        /// It holds a regular file with more than one name.
        var hardLinked: Bool
        var weight: UInt64
        /// The entry and everything below it.
        var entries: Int
    }

    /// The source's top-level entries when this run is a first copy to do in lanes: lanes on, the destination
    /// missing or empty, and at least two top-level entries the excludes keep; else `nil`.
    ///
    /// rsync run as another user (``Rsync/credentials``, a test seam) copies with one rsync: swift-subprocess starts
    /// such a process with `fork` and `setuid` instead of `posix_spawn`, and a child forked while other threads of
    /// the agent hold a lock can hang before `exec` (seen while the lanes overlapped the walk).
    func laneEntries(_ spec: SyncSpec, excludes: ExcludeMatcher) -> [TopEntry]? {
        guard copyLanes > 1, rsync.credentials == nil, Self.isMissingOrEmpty(spec.destination) else { return nil }
        guard let directory = opendir(spec.source) else { return nil }
        defer { closedir(directory) }
        var entries: [TopEntry] = []
        while let dirent = readdir(directory) {
            guard let name = TreeWalker.entryName(dirent) else { continue }
            // Vanished since readdir: rsync would not see it either.
            guard let stat = FileStat.lstat(root: spec.source, relative: name) else { continue }
            entries.append(TopEntry(name: name, stat: stat))
        }
        let kept = entries.filter { !excludes.excludes($0.name, isDirectory: $0.stat.isDirectory) }
        return kept.count >= 2 ? entries : nil
    }

    /// What one entry costs a lane beyond its bytes, in bytes: creating and closing a file is worth about this much
    /// copying.
    static let laneEntryWeight: UInt64 = 16 << 10

    /// The jobs for `tops` (see the extension's documentation), heaviest first.
    static func laneJobs(_ tops: [WalkedTop], hasExcludes: Bool) -> [LaneJob] {
        var jobs: [LaneJob] = []
        var shared = LaneJob(names: [], directory: nil, weight: 0, entries: 0)
        for top in tops {
            let plain = top.isDirectory && !top.hardLinked ? String(validating: top.name, as: UTF8.self) : nil
            if let plain, !hasExcludes {
                jobs.append(LaneJob(names: [top.name], directory: plain, weight: top.weight, entries: top.entries))
            } else if hasExcludes, !top.hardLinked {
                jobs.append(LaneJob(names: [top.name], directory: nil, weight: top.weight, entries: top.entries))
            } else {
                shared.names.append(top.name)
                shared.weight += top.weight
                shared.entries += top.entries
            }
        }
        if !shared.names.isEmpty { jobs.append(shared) }
        // Stable: equal weights keep the walk's order.
        return jobs.enumerated().sorted { ($0.element.weight, $1.offset) > ($1.element.weight, $0.offset) }
            .map(\.element)
    }

    /// A first copy in lanes (see the extension's documentation).
    ///
    /// - Parameters:
    ///   - entries: ``laneEntries(_:excludes:)``.
    ///   - prepare: runs after the walk and before anything is copied: the precheck (its event, its refusal) and
    ///     whatever the caller must do before the copy (creating the destination). When it throws, nothing is
    ///     copied.
    /// - Returns: the report (progress summed over the jobs, exit code the first job failure that is not 24,
    ///   else 24 if a job had vanished files, else 0; every job's failed and vanished files; stats summed), the
    ///   source walk (as ``SourceSize/snapshot(root:excludes:workers:)`` would give it) and the precheck.
    func copyInLanes(
        _ spec: SyncSpec, entries: [TopEntry], excludes: ExcludeMatcher,
        prepare: (SourceWalk) async throws -> Precheck, onEvent: @escaping @Sendable (Event) -> Void
    ) async throws -> (report: Report, walk: SourceWalk, precheck: Precheck) {
        let (walk, tops) = try await walkTops(spec, entries: entries, excludes: excludes)
        try Task.checkCancellation()
        let check = try await prepare(walk)
        try Task.checkCancellation()
        let jobs = Self.laneJobs(tops, hasExcludes: !spec.excludes.isEmpty)
        let lanes = max(1, min(copyLanes, jobs.count))
        logger.info(
            "first copy into an empty destination: \(jobs.count) rsync jobs, \(lanes) at once",
            metadata: ["alone": "\(jobs.filter(\.alone).count)"])

        let started = ContinuousClock.now
        let combined = LaneProgress(
            expectedEntries: jobs.map(\.entries), totalBytes: walk.result.regularBytes, started: started)
        let throttle = ProgressThrottle(interval: progressInterval) { onEvent(.progress($0)) }
        let ticker = Task { await throttle.tick() }
        defer { ticker.cancel() }
        let queue = JobQueue(count: jobs.count)
        let outcomes = try await withThrowingTaskGroup(of: [(Int, Rsync.Outcome)].self) { group in
            for _ in 0..<lanes {
                group.addTask { [self] in
                    var done: [(Int, Rsync.Outcome)] = []
                    while true {
                        try Task.checkCancellation()
                        guard let index = queue.next() else { return done }
                        let outcome = try await runJob(jobs[index], spec: spec) { progress in
                            throttle.record(combined.update(job: index, progress))
                        }
                        if let last = outcome.lastProgress { throttle.record(combined.update(job: index, last)) }
                        done.append((index, outcome))
                    }
                }
            }
            var all: [(Int, Rsync.Outcome)] = []
            for try await part in group { all += part }
            return all.sorted { $0.0 < $1.0 }.map(\.1)
        }

        // The root's own attributes, after every job's writes into it.
        var rootArguments = Rsync.arguments(for: spec, dryRun: false)
        rootArguments.insert("--exclude=*", at: rootArguments.count - 2)
        let root = try await rsync.run(arguments: rootArguments, interval: .seconds(3600), logger: logger) { _ in }
        if root.status.code == 0, let rootTime = walk.entries.last(where: { $0.path.isEmpty })?.stat.modificationTime {
            // rsync leaves a directory's time alone when only the fraction of a second differs; one rsync over the
            // whole tree would have set it exactly at the end.
            setModificationTime(SyncSpec.normalized(spec.destination), nanoseconds: rootTime)
        }
        ticker.cancel()
        let final = combined.final(seconds: Int(Self.seconds(ContinuousClock.now - started).rounded()))
        throttle.record(final)
        throttle.finish()

        let all = outcomes + [root]
        let failure = all.first { $0.status.code != 0 && $0.status.code != 24 }
        let code = failure?.status.code ?? (all.contains { $0.status.code == 24 } ? 24 : 0)
        let status = RsyncExitStatus(code: code, stderrLines: all.flatMap(\.stderrLines))
        var stats = RsyncStats()
        for outcome in all { stats.add(outcome.stats) }
        logger.info(
            "rsync finished",
            metadata: [
                "code": "\(status.code)", "jobs": "\(outcomes.map(\.status.code))",
                "transferred": "\(stats.transferredFiles ?? -1)",
            ])
        var report = Report(
            spec: spec, dryRun: false, precheck: check, exitCode: status.code, severity: status.severity,
            message: status.message(), hint: status.hint, failedFiles: status.failedFiles,
            vanishedFiles: status.vanishedFiles, destinationFull: status.destinationFull, stats: stats,
            lastProgress: final, progressRecords: outcomes.reduce(0) { $0 + $1.progressRecords },
            progressCallbacks: throttle.callbacks, verification: nil, elapsedSeconds: 0)
        report.lanes = lanes
        return (report, walk, check)
    }

    /// One job's rsync (see ``LaneJob``).
    private func runJob(
        _ job: LaneJob, spec: SyncSpec, onProgress: @escaping @Sendable (RsyncProgress) -> Void
    ) async throws -> Rsync.Outcome {
        var arguments = Rsync.arguments(for: spec, dryRun: false)
        if let name = job.directory {
            arguments.removeLast(2)
            arguments.append(SyncSpec.normalized(spec.source) + "/" + name + "/")
            arguments.append(SyncSpec.normalized(spec.destination) + "/" + name + "/")
            return try await rsync.run(
                arguments: arguments, interval: progressInterval / 4, logger: logger, onProgress: onProgress)
        }
        arguments.insert(contentsOf: ["--files-from=-", "--from0", "--recursive"], at: arguments.count - 2)
        return try await rsync.run(
            arguments: arguments, input: Self.fileList(job.names), interval: progressInterval / 4, logger: logger,
            onProgress: onProgress)
    }

    /// The source's snapshot walk, one top-level entry at a time, with each kept entry's weight (bytes plus
    /// ``laneEntryWeight`` per entry), entry count and hard links. The figures are those of one walk of the whole
    /// tree, except that a file hard-linked from two top-level entries counts once per entry (the precheck errs on
    /// the safe side).
    private func walkTops(
        _ spec: SyncSpec, entries: [TopEntry], excludes: ExcludeMatcher
    ) async throws -> (walk: SourceWalk, tops: [WalkedTop]) {
        var result = SourceSize.Result()
        var snapshot: [SourceSize.SnapshotEntry] = []
        var tops: [WalkedTop] = []
        for top in entries {
            try Task.checkCancellation()
            let isDirectory = top.stat.isDirectory
            let excluded = excludes.excludes(top.name, isDirectory: isDirectory)
            snapshot.append(SourceSize.SnapshotEntry(path: top.name, stat: top.stat))
            let isRegular = top.stat.mode & UInt32(S_IFMT) == UInt32(S_IFREG)
            var weight = top.stat.size + Self.laneEntryWeight
            var hardLinked = isRegular && top.stat.isHardLinked
            var count = 1
            if isDirectory {
                let below: SourceWalk
                do {
                    below = try await SourceSize.snapshot(
                        root: spec.source, below: top.name, excluded: excluded, excludes: excludes,
                        workers: Self.firstCopyWalkers)
                } catch let error as TreeWalker.WalkError {
                    throw Self.unreadableSource(error)
                }
                result.bytes += below.result.bytes
                result.entries += below.result.entries
                result.regularBytes += below.result.regularBytes
                result.unreadable += below.result.unreadable
                count += below.result.entries
                for entry in below.entries {
                    weight += entry.stat.size + Self.laneEntryWeight
                    if entry.stat.isHardLinked, entry.stat.mode & UInt32(S_IFMT) == UInt32(S_IFREG) {
                        hardLinked = true
                    }
                }
                snapshot += below.entries
            }
            guard !excluded else { continue }
            result.entries += 1
            if isDirectory {
                result.bytes += 4096
            } else if isRegular {
                result.regularBytes += top.stat.size
                result.bytes += (top.stat.size + 4095) / 4096 * 4096
            } else if top.stat.mode & UInt32(S_IFMT) == UInt32(S_IFLNK) {
                result.regularBytes += top.stat.size  // rsync counts link targets too
            }
            tops.append(
                WalkedTop(
                    name: top.name, isDirectory: isDirectory, hardLinked: hardLinked, weight: weight, entries: count))
        }
        if let root = FileStat.lstat(root: spec.source, relative: []) {
            snapshot.append(SourceSize.SnapshotEntry(path: [], stat: root))
        }
        return ((result, snapshot), tops)
    }

    /// `paths` NUL-separated (`.` for the root) for `--files-from=- --from0`.
    static func fileList(_ paths: [[UInt8]]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(paths.reduce(0) { $0 + $1.count + 1 })
        for path in paths {
            bytes += path.isEmpty ? [UInt8(ascii: ".")] : path
            bytes.append(0)
        }
        return bytes
    }

    /// Whether `path` does not exist or is an empty directory (a first copy: nothing to compare or delete).
    static func isMissingOrEmpty(_ path: String) -> Bool {
        guard let kind = FileStatus.lstat(path)?.kind else { return true }
        guard kind == .directory, let directory = opendir(path) else { return false }
        defer { closedir(directory) }
        while let dirent = readdir(directory) {
            if TreeWalker.entryName(dirent) != nil { return false }
        }
        return true
    }
}

extension SyncEngine {
    /// Sets `path`'s modification time (not following a symlink), leaving its access time; a failure is logged and
    /// returns false.
    @discardableResult
    func setModificationTime(_ path: String, nanoseconds: Int64) -> Bool {
        let times = [
            timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2),  // UTIME_OMIT (a macro Swift does not import)
            timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000)),
        ]
        guard utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) == 0 else {
            logger.warning("cannot set the modification time of '\(path)': \(String(cString: strerror(errno)))")
            return false
        }
        return true
    }
}

/// The lanes' shared queue of jobs: each takes the next one when it is free.
final class JobQueue: Sendable {
    private let taken = Mutex(0)
    private let count: Int

    init(count: Int) { self.count = count }

    /// The next job's index, `nil` when all are taken.
    func next() -> Int? {
        taken.withLock { taken in
            guard taken < count else { return nil }
            defer { taken += 1 }
            return taken
        }
    }
}

/// The jobs' latest progress records, summed into one.
final class LaneProgress: Sendable {
    private let latest: Mutex<[RsyncProgress?]>
    /// Per job, the entries its rsync will list: a job not started yet counts them as still to check.
    private let expectedEntries: [Int]
    private let totalBytes: UInt64
    private let started: ContinuousClock.Instant

    init(expectedEntries: [Int], totalBytes: UInt64, started: ContinuousClock.Instant) {
        latest = Mutex(Array(repeating: nil, count: expectedEntries.count))
        self.expectedEntries = expectedEntries
        self.totalBytes = totalBytes
        self.started = started
    }

    /// Records `progress` as job `job`'s newest and returns the sum.
    func update(job: Int, _ progress: RsyncProgress) -> RsyncProgress {
        let records = latest.withLock { latest in
            // A job's ticker repeats an all-zero record while it builds its file list; never step back.
            if let known = latest[job], known.bytes > progress.bytes || known.isComplete { return latest }
            latest[job] = progress
            return latest
        }
        return sum(records, complete: false, seconds: nil)
    }

    /// The sum once every job is done: 100 %, the elapsed time in place of the estimate (as rsync's final record).
    func final(seconds: Int) -> RsyncProgress {
        sum(latest.withLock { $0 }, complete: true, seconds: seconds)
    }

    private func sum(_ records: [RsyncProgress?], complete: Bool, seconds: Int?) -> RsyncProgress {
        var bytes: UInt64 = 0
        var rate = 0.0
        var transferred: Int?
        var remaining = 0
        var total = 0
        var allListed = true
        for (job, record) in records.enumerated() {
            guard let record else {
                remaining += expectedEntries[job]
                total += expectedEntries[job]
                continue
            }
            bytes += record.bytes
            if !record.isComplete { rate += record.bytesPerSecond }
            if let files = record.transferredFiles { transferred = (transferred ?? 0) + files }
            if let left = record.remainingToCheck, let all = record.totalToCheck {
                remaining += left
                total += all
            } else {
                allListed = false  // still building its file list
            }
        }
        let percent =
            complete ? 100 : totalBytes == 0 ? 0 : Int(min(99, Double(bytes) * 100 / Double(totalBytes)))
        let left = totalBytes > bytes ? Double(totalBytes - bytes) : 0
        let estimate: Int? = complete ? seconds : rate > 0 ? Int((left / rate).rounded()) : nil
        // The root itself, which the attribute pass checks last, counts as in one rsync's `to-chk=R/T`.
        return RsyncProgress(
            bytes: bytes, percent: percent, bytesPerSecond: complete ? Self.average(bytes, started) : rate,
            seconds: estimate, transferredFiles: transferred,
            remainingToCheck: complete ? 0 : allListed ? remaining + 1 : nil,
            totalToCheck: complete || allListed ? total + 1 : nil)
    }

    private static func average(_ bytes: UInt64, _ started: ContinuousClock.Instant) -> Double {
        let elapsed = SyncEngine.seconds(ContinuousClock.now - started)
        return elapsed > 0 ? Double(bytes) / elapsed : 0
    }
}

extension RsyncStats {
    /// Adds another run's figures (a field stays `nil` only if both are).
    mutating func add(_ other: RsyncStats) {
        func plus<T: AdditiveArithmetic>(_ a: T?, _ b: T?) -> T? {
            a == nil && b == nil ? nil : (a ?? .zero) + (b ?? .zero)
        }
        files = plus(files, other.files)
        createdFiles = plus(createdFiles, other.createdFiles)
        deletedFiles = plus(deletedFiles, other.deletedFiles)
        transferredFiles = plus(transferredFiles, other.transferredFiles)
        totalFileBytes = plus(totalFileBytes, other.totalFileBytes)
        transferredFileBytes = plus(transferredFileBytes, other.transferredFileBytes)
        literalBytes = plus(literalBytes, other.literalBytes)
    }
}
