import Foundation
import Logging
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A first copy in lanes: several rsync processes at once, each over its own share of the source's top-level
/// entries.
///
/// One rsync copies a tree of many small files one file after another: it waits for each file's blocks to come off
/// the disk, and its three processes (sender, generator, receiver) leave most of two cores idle while it waits. A
/// first copy (nothing at the destination, nothing to compare or delete) splits the source's top-level entries into
/// lanes balanced by size and runs one rsync per lane with the usual options plus `--files-from` (the lane's
/// top-level names) and `--recursive`, so each lane is the same rsync over a part of the tree. Entries that share a
/// hard-linked file go into the same lane, so `-H` still links them. When the lanes are done, one more rsync with
/// `--exclude=*` sets the destination root's own attributes (mode, owner, times, ACLs, xattrs), which the lanes'
/// writes into it would otherwise leave at the time of the copy. Re-runs are not done in lanes: they go through the
/// change journal, or one rsync over the whole tree.
extension SyncEngine {
    /// The source's top-level names (raw bytes) in lanes, or `nil` when there are fewer than two non-empty lanes.
    ///
    /// An entry weighs its bytes plus ``laneEntryWeight`` for each entry below it (per-file work dominates trees of
    /// small files). Top-level entries that share a hard-linked file (same inode) are one unit. Units go, largest
    /// first, to the lightest lane. Top-level entries the excludes exclude are not listed (rsync would skip them
    /// anyway); what is below an entry is filtered by rsync itself.
    static func lanes(
        of entries: [SourceSize.SnapshotEntry], excludes: ExcludeMatcher, count: Int
    ) -> [[[UInt8]]]? {
        guard count > 1 else { return nil }
        var index: [[UInt8]: Int] = [:]
        var names: [[UInt8]] = []
        var weights: [UInt64] = []
        var parent: [Int] = []
        var isDirectory: [Bool] = []
        var linked: [UInt64: Int] = [:]
        func find(_ unit: Int) -> Int {
            var unit = unit
            while parent[unit] != unit {
                parent[unit] = parent[parent[unit]]
                unit = parent[unit]
            }
            return unit
        }
        for entry in entries where !entry.path.isEmpty {
            let top = Array(entry.path.prefix(while: { $0 != UInt8(ascii: "/") }))
            let unit: Int
            if let known = index[top] {
                unit = known
            } else {
                unit = names.count
                index[top] = unit
                names.append(top)
                weights.append(0)
                parent.append(unit)
                isDirectory.append(false)
            }
            if entry.path.count == top.count { isDirectory[unit] = entry.stat.isDirectory }
            weights[unit] += entry.stat.size + laneEntryWeight
            if entry.stat.isHardLinked, entry.stat.mode & UInt32(S_IFMT) == UInt32(S_IFREG) {
                if let other = linked[entry.stat.inode] {
                    let (a, b) = (find(other), find(unit))
                    if a != b { parent[b] = a }
                } else {
                    linked[entry.stat.inode] = unit
                }
            }
        }
        var units: [Int: (weight: UInt64, names: [[UInt8]])] = [:]
        for unit in names.indices {
            if excludes.excludes(names[unit], isDirectory: isDirectory[unit]) { continue }
            units[find(unit), default: (0, [])].weight += weights[unit]
            units[find(unit), default: (0, [])].names.append(names[unit])
        }
        var lanes = [(weight: UInt64, names: [[UInt8]])](repeating: (0, []), count: count)
        let ordered = units.values.sorted {
            $0.weight != $1.weight ? $0.weight > $1.weight : $0.names[0].lexicographicallyPrecedes($1.names[0])
        }
        for unit in ordered {
            let lightest = lanes.indices.min { lanes[$0].weight < lanes[$1].weight } ?? 0
            lanes[lightest].weight += unit.weight
            lanes[lightest].names += unit.names
        }
        let filled = lanes.filter { !$0.names.isEmpty }.map(\.names)
        return filled.count > 1 ? filled : nil
    }

    /// What one entry costs a lane beyond its bytes, in bytes: creating and closing a file is worth about this much
    /// copying.
    static let laneEntryWeight: UInt64 = 16 << 10

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
            let name = withUnsafeBytes(of: dirent.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            if name != [UInt8(ascii: ".")], name != [UInt8(ascii: "."), UInt8(ascii: ".")] { return false }
        }
        return true
    }

    /// Runs one rsync per lane at once, then the root's attribute pass, and merges their outcomes into one report.
    ///
    /// Progress is the lanes' sum: bytes, files transferred, entries checked; the percentage and the estimate are
    /// against the source's regular bytes from `walk`, as rsync's own total). Exit code: the first lane's failure
    /// that is not "vanished files" (24), else 24 if any lane had vanished files, else 0; the failed and vanished
    /// files are all the lanes'.
    func copyInLanes(
        _ spec: SyncSpec, precheck check: Precheck, lanes: [[[UInt8]]], walk: SourceWalk,
        onEvent: @escaping @Sendable (Event) -> Void
    ) async throws -> Report {
        let totalBytes = walk.result.regularBytes
        let rootModificationTime = walk.entries.last { $0.path.isEmpty }?.stat.modificationTime
        var laneArguments = Rsync.arguments(for: spec, dryRun: false)
        // The lane's names come on stdin; --files-from turns the recursion of -a off, and each name is a subtree.
        laneArguments.insert(contentsOf: ["--files-from=-", "--from0", "--recursive"], at: laneArguments.count - 2)
        let arguments = laneArguments
        logger.info(
            "first copy into an empty destination: \(lanes.count) rsync processes at once",
            metadata: ["entries": "\(lanes.map(\.count))"])
        let started = ContinuousClock.now
        let combined = LaneProgress(lanes: lanes.count, totalBytes: totalBytes, started: started)
        let throttle = ProgressThrottle(interval: progressInterval) { onEvent(.progress($0)) }
        let laneInterval = progressInterval / 4
        let outcomes: [Rsync.Outcome] = try await withThrowingTaskGroup(of: (Int, Rsync.Outcome)?.self) { group in
            group.addTask {
                await throttle.tick()
                return nil
            }
            for (lane, names) in lanes.enumerated() {
                group.addTask {
                    let outcome = try await rsync.run(
                        arguments: arguments, input: Self.fileList(names), interval: laneInterval, logger: logger
                    ) {
                        throttle.record(combined.update(lane: lane, $0))
                    }
                    if let last = outcome.lastProgress { throttle.record(combined.update(lane: lane, last)) }
                    return (lane, outcome)
                }
            }
            var outcomes = [Rsync.Outcome?](repeating: nil, count: lanes.count)
            var left = lanes.count
            while left > 0, let next = try await group.next() {
                guard let (lane, outcome) = next else { continue }
                outcomes[lane] = outcome
                left -= 1
            }
            group.cancelAll()
            return outcomes.compactMap { $0 }
        }
        // The root's own attributes, after every lane's writes into it.
        var rootArguments = Rsync.arguments(for: spec, dryRun: false)
        rootArguments.insert("--exclude=*", at: rootArguments.count - 2)
        let root = try await rsync.run(arguments: rootArguments, interval: .seconds(3600), logger: logger) { _ in }
        if root.status.code == 0, let rootModificationTime {
            // rsync leaves a directory's time alone when only the fraction of a second differs; one rsync over the
            // whole tree would have set it exactly at the end.
            setModificationTime(SyncSpec.normalized(spec.destination), nanoseconds: rootModificationTime)
        }
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
                "code": "\(status.code)", "lanes": "\(outcomes.map(\.status.code))",
                "transferred": "\(stats.transferredFiles ?? -1)",
            ])
        var report = Report(
            spec: spec, dryRun: false, precheck: check, exitCode: status.code, severity: status.severity,
            message: status.message(), hint: status.hint, failedFiles: status.failedFiles,
            vanishedFiles: status.vanishedFiles, destinationFull: status.destinationFull, stats: stats,
            lastProgress: final, progressRecords: outcomes.reduce(0) { $0 + $1.progressRecords },
            progressCallbacks: throttle.callbacks, verification: nil, elapsedSeconds: 0)
        report.lanes = lanes.count
        return report
    }
}

extension SyncEngine {
    /// Sets `path`'s modification time (not following a symlink), leaving its access time; a failure is logged.
    func setModificationTime(_ path: String, nanoseconds: Int64) {
        let times = [
            timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2),  // UTIME_OMIT (a macro Swift does not import)
            timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000)),
        ]
        if utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) != 0 {
            logger.warning("cannot set the modification time of '\(path)': \(String(cString: strerror(errno)))")
        }
    }
}

/// The lanes' latest progress records, summed into one.
final class LaneProgress: Sendable {
    private let latest: Mutex<[RsyncProgress?]>
    private let totalBytes: UInt64
    private let started: ContinuousClock.Instant

    init(lanes: Int, totalBytes: UInt64, started: ContinuousClock.Instant) {
        latest = Mutex(Array(repeating: nil, count: lanes))
        self.totalBytes = totalBytes
        self.started = started
    }

    /// Records `progress` as lane `lane`'s newest and returns the sum.
    func update(lane: Int, _ progress: RsyncProgress) -> RsyncProgress {
        let records = latest.withLock { latest in
            // A lane's ticker repeats an all-zero record while it builds its file list; never step back.
            if let known = latest[lane], known.bytes > progress.bytes || known.isComplete { return latest }
            latest[lane] = progress
            return latest
        }
        return sum(records, complete: false, seconds: nil)
    }

    /// The sum once every lane is done: 100 %, the elapsed time in place of the estimate (as rsync's final record).
    func final(seconds: Int) -> RsyncProgress {
        sum(latest.withLock { $0 }, complete: true, seconds: seconds)
    }

    private func sum(_ records: [RsyncProgress?], complete: Bool, seconds: Int?) -> RsyncProgress {
        var bytes: UInt64 = 0
        var rate = 0.0
        var transferred: Int?
        var remaining: Int?
        var total: Int?
        var allListed = true
        for record in records {
            guard let record else {
                allListed = false
                continue
            }
            bytes += record.bytes
            if !record.isComplete { rate += record.bytesPerSecond }
            if let files = record.transferredFiles { transferred = (transferred ?? 0) + files }
            if let left = record.remainingToCheck, let all = record.totalToCheck {
                remaining = (remaining ?? 0) + left
                total = (total ?? 0) + all
            } else {
                allListed = false
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
            remainingToCheck: complete ? 0 : allListed ? remaining.map { $0 + 1 } : nil,
            totalToCheck: complete || allListed ? total.map { $0 + 1 } : nil)
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
