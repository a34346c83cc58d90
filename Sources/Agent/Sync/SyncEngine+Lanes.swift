import CXattr
import Foundation
import Logging
import Shared
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A first copy in lanes: several rsync processes at once, each over its own share of the source's top-level
/// entries.
///
/// One rsync copies a tree of many small files one file after another: it waits for each file's blocks to come off
/// the disk, and its three processes (sender, generator, receiver) leave much of two cores idle while it waits. A
/// first copy (nothing at the destination, nothing to compare or delete) runs one rsync per lane with the usual
/// options plus `--files-from=- --from0 --recursive`: each lane is the same rsync over the top-level entries it reads
/// on its standard input.
///
/// The lanes start before the source is walked, and the walk feeds them: the source is walked one top-level entry
/// at a time (all cores within each), and as soon as an entry's size is known its name goes to the lightest lane.
/// rsync builds its whole file list before it copies anything (`--no-inc-recursive`), so each lane walks its
/// entries right behind muster's walk (on a warm cache) and then waits for the end of its list, which it only gets
/// once the free-space precheck has passed; when the precheck refuses, the lanes are stopped with nothing copied.
/// Entries holding a hard-linked file all go to the first lane, so `-H` still links every name. When the lanes are
/// done, one more rsync with `--exclude=*` sets the destination root's own attributes (mode, owner, times, ACLs,
/// xattrs), which the lanes' writes into it would otherwise leave at the time of the copy. Re-runs are not done in
/// lanes: they go through the change journal, or one rsync over the whole tree.
extension SyncEngine {
    /// One top-level entry of the source.
    struct TopEntry: Sendable {
        var name: [UInt8]
        var stat: FileStat
    }

    /// The source's top-level entries when this run is a first copy to do in lanes: lanes on, the destination
    /// missing or empty, and at least two top-level entries the excludes keep; else `nil`.
    ///
    /// rsync run as another user (``Rsync/credentials``, a test seam) copies with one rsync: swift-subprocess starts
    /// such a process with `fork` and `setuid` instead of `posix_spawn`, and a child forked while the walk's threads
    /// hold a lock can hang before `exec` (seen: a forked child stuck on a futex, holding the lanes' pipes open).
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

    /// A first copy in lanes (see the extension's documentation).
    ///
    /// - Parameters:
    ///   - entries: ``laneEntries(_:excludes:)``.
    ///   - prepare: runs after the walk and before anything is copied: the precheck (its event, its refusal) and
    ///     whatever the caller must do before the copy (creating the destination). When it throws, the lanes are
    ///     stopped and nothing is copied.
    /// - Returns: the report (progress summed over the lanes, exit code the first lane failure that is not 24,
    ///   else 24 if a lane had vanished files, else 0; every lane's failed and vanished files; stats summed), the
    ///   source walk (as ``SourceSize/snapshot(root:excludes:workers:)`` would give it) and the precheck.
    func copyInLanes(
        _ spec: SyncSpec, entries: [TopEntry], excludes: ExcludeMatcher,
        prepare: (SourceWalk) async throws -> Precheck, onEvent: @escaping @Sendable (Event) -> Void
    ) async throws -> (report: Report, walk: SourceWalk, precheck: Precheck) {
        var laneArguments = Rsync.arguments(for: spec, dryRun: false)
        laneArguments.insert(contentsOf: ["--files-from=-", "--from0", "--recursive"], at: laneArguments.count - 2)
        let arguments = laneArguments
        let gate = try LaneGate(count: copyLanes)
        let started = ContinuousClock.now
        let combined = LaneProgress(lanes: copyLanes, started: started)
        let throttle = ProgressThrottle(interval: progressInterval) { onEvent(.progress($0)) }
        let laneInterval = progressInterval / 4
        let rsync = self.rsync
        let logger = self.logger
        var laneTasks: [Task<Rsync.Outcome, any Error>] = []
        for (lane, reader) in gate.readers.enumerated() {
            laneTasks.append(
                Task {
                    try await rsync.run(
                        arguments: arguments,
                        standardInput: .fileDescriptor(
                            FileDescriptor(rawValue: reader), closeAfterSpawningProcess: true),
                        interval: laneInterval, logger: logger
                    ) { progress in
                        // Before the release a lane only repeats an empty record while it waits for its list.
                        if combined.isReleased { throttle.record(combined.update(lane: lane, progress)) }
                    }
                })
        }
        let tasks = laneTasks
        /// Stops every lane (SIGTERM; they are still waiting for the end of their lists, so nothing was copied),
        /// waits for them, and only then closes the lists.
        func stopLanes() async {
            for task in tasks { task.cancel() }
            for task in tasks { _ = try? await task.value }
            gate.close()
        }

        let walk: SourceWalk
        let check: Precheck
        do {
            walk = try await walkFeeding(spec, entries: entries, excludes: excludes, gate: gate)
            // The lanes are tasks of their own: a cancelled run must not let them copy.
            try Task.checkCancellation()
            check = try await prepare(walk)
            try Task.checkCancellation()
        } catch {
            await stopLanes()
            throw error
        }
        logger.info(
            "first copy into an empty destination: \(copyLanes) rsync processes at once",
            metadata: ["entries": "\(gate.assigned.map(\.count))"])
        combined.release(totalBytes: walk.result.regularBytes)
        await gate.release()
        let ticker = Task { await throttle.tick() }
        defer { ticker.cancel() }
        var outcomes: [Rsync.Outcome] = []
        do {
            try await withTaskCancellationHandler {
                for (lane, task) in tasks.enumerated() {
                    let outcome = try await task.value
                    if let last = outcome.lastProgress { throttle.record(combined.update(lane: lane, last)) }
                    outcomes.append(outcome)
                }
            } onCancel: {
                for task in tasks { task.cancel() }
            }
        } catch {
            await stopLanes()
            throw error
        }

        // The root's own attributes, after every lane's writes into it.
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
                "code": "\(status.code)", "lanes": "\(outcomes.map(\.status.code))",
                "transferred": "\(stats.transferredFiles ?? -1)",
            ])
        var report = Report(
            spec: spec, dryRun: false, precheck: check, exitCode: status.code, severity: status.severity,
            message: status.message(), hint: status.hint, failedFiles: status.failedFiles,
            vanishedFiles: status.vanishedFiles, destinationFull: status.destinationFull, stats: stats,
            lastProgress: final, progressRecords: outcomes.reduce(0) { $0 + $1.progressRecords },
            progressCallbacks: throttle.callbacks, verification: nil, elapsedSeconds: 0)
        report.lanes = gate.assigned.filter { !$0.isEmpty }.count
        return (report, walk, check)
    }

    /// The source's snapshot walk, one top-level entry at a time; each entry the excludes keep goes to a lane once
    /// its weight (bytes plus ``laneEntryWeight`` per entry) is known. The figures are those of one walk of the
    /// whole tree, except that a file hard-linked from two top-level entries counts once per entry (the precheck
    /// errs on the safe side).
    private func walkFeeding(
        _ spec: SyncSpec, entries: [TopEntry], excludes: ExcludeMatcher, gate: LaneGate
    ) async throws -> SourceWalk {
        var result = SourceSize.Result()
        var snapshot: [SourceSize.SnapshotEntry] = []
        for top in entries {
            try Task.checkCancellation()
            let isDirectory = top.stat.isDirectory
            let excluded = excludes.excludes(top.name, isDirectory: isDirectory)
            snapshot.append(SourceSize.SnapshotEntry(path: top.name, stat: top.stat))
            let isRegular = top.stat.mode & UInt32(S_IFMT) == UInt32(S_IFREG)
            var weight = top.stat.size + Self.laneEntryWeight
            var hardLinked = isRegular && top.stat.isHardLinked
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
            gate.assign(top.name, weight: weight, firstLane: hardLinked)
        }
        if let root = FileStat.lstat(root: spec.source, relative: []) {
            snapshot.append(SourceSize.SnapshotEntry(path: [], stat: root))
        }
        return (result, snapshot)
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

/// The lanes' `--files-from` lists: one pipe per lane, whose read end is the lane's rsync's standard input. Names
/// are written as they are assigned (without blocking: what does not fit waits in memory), and the lists end (the
/// write ends close) only at ``release()``.
final class LaneGate: Sendable {
    private struct State {
        var pending: [[UInt8]]
        var weights: [UInt64]
        var names: [[[UInt8]]]
        var closed = false
    }

    /// The read ends, one per lane, for the lanes' rsyncs (close-on-exec; the spawn makes one a child's stdin).
    let readers: [Int32]
    private let writers: [Int32]
    private let state: Mutex<State>

    /// - Throws: ``MusterError`` (`io`) when the pipes cannot be made.
    init(count: Int) throws {
        var readers: [Int32] = []
        var writers: [Int32] = []
        for _ in 0..<count {
            var fds: [Int32] = [-1, -1]
            guard muster_pipe_cloexec(&fds) == 0 else {
                let error = String(cString: strerror(errno))
                for fd in readers + writers { Glibc.close(fd) }
                throw MusterError(.io, "cannot create a pipe for an rsync lane: \(error)")
            }
            _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
            readers.append(fds[0])
            writers.append(fds[1])
        }
        self.readers = readers
        self.writers = writers
        state = Mutex(
            State(
                pending: Array(repeating: [], count: count), weights: Array(repeating: 0, count: count),
                names: Array(repeating: [], count: count)))
        // A lane that died leaves a pipe without a reader: a write must fail with EPIPE, not kill the agent.
        signal(SIGPIPE, SIG_IGN)
    }

    /// The names each lane got so far.
    var assigned: [[[UInt8]]] { state.withLock { $0.names } }

    /// Gives `name` to the lightest lane (or the first, for `firstLane`) and writes as much of the list as the pipe
    /// takes now.
    func assign(_ name: [UInt8], weight: UInt64, firstLane: Bool) {
        state.withLock { state in
            guard !state.closed else { return }
            let lane = firstLane ? 0 : state.weights.indices.min { state.weights[$0] < state.weights[$1] } ?? 0
            state.weights[lane] += weight
            state.names[lane].append(name)
            state.pending[lane] += name + [0]
            Self.flush(writers[lane], &state.pending[lane], blocking: false)
        }
    }

    /// Writes the rest of every list and closes them: the lanes' rsyncs read the end of their lists and copy.
    func release() async {
        await onOwnThread { [self] in
            state.withLock { state in
                guard !state.closed else { return }
                for lane in writers.indices {
                    _ = fcntl(writers[lane], F_SETFL, fcntl(writers[lane], F_GETFL) & ~O_NONBLOCK)
                    Self.flush(writers[lane], &state.pending[lane], blocking: true)
                    Glibc.close(writers[lane])
                }
                state.closed = true
            }
        }
    }

    /// Closes the lists as they are (after the lanes were stopped).
    func close() {
        state.withLock { state in
            guard !state.closed else { return }
            for writer in writers { Glibc.close(writer) }
            state.closed = true
        }
    }

    /// Writes from the front of `pending` until it is empty, the pipe is full (non-blocking) or the reader is gone
    /// (then the rest is dropped: that lane's rsync has exited and says why).
    private static func flush(_ fd: Int32, _ pending: inout [UInt8], blocking: Bool) {
        while !pending.isEmpty {
            let written = pending.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written > 0 {
                pending.removeFirst(written)
            } else if written < 0, errno == EINTR {
                continue
            } else if written < 0, errno == EAGAIN, !blocking {
                return
            } else {
                pending.removeAll()
                return
            }
        }
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

/// The lanes' latest progress records, summed into one.
final class LaneProgress: Sendable {
    private let latest: Mutex<[RsyncProgress?]>
    /// The source's total bytes, known at the release; `nil` before it.
    private let total = Mutex<UInt64?>(nil)
    private let started: ContinuousClock.Instant

    init(lanes: Int, started: ContinuousClock.Instant) {
        latest = Mutex(Array(repeating: nil, count: lanes))
        self.started = started
    }

    /// The lanes got the end of their lists: from now on their records count.
    func release(totalBytes: UInt64) { total.withLock { $0 = totalBytes } }

    var isReleased: Bool { total.withLock { $0 != nil } }

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
        let totalBytes = total.withLock { $0 } ?? 0
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
