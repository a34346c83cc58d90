import Foundation
import Logging
import Shared
import Subprocess
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

extension SyncEngine {
    /// A run through the change journal (``SyncJournal``).
    ///
    /// The source (the precheck's walk, now `lstat`ing every entry) and the destination are walked at once while
    /// the journal loads. When the journal proves nothing changed, rsync is not started; when some paths changed,
    /// rsync gets the same arguments plus `--files-from` with just those; otherwise (no usable journal, or one
    /// that cannot prove a partial run safe) rsync runs over the whole tree. After a clean run (exit 0, no failed
    /// or vanished files, verification passed if asked) a fresh journal is written; before rsync starts, the old
    /// one is removed, so a journal on disk always describes the state after a clean sync.
    func runWithJournal(
        _ spec: SyncSpec, started: ContinuousClock.Instant, directory: String,
        onEvent: @escaping @Sendable (Event) -> Void
    ) async throws -> Report {
        let excludes = ExcludeMatcher(spec.excludes)
        // Half the interval: a tick delayed by a busy machine still lands within the promised second.
        let heartbeat = ProgressHeartbeat(interval: progressInterval / 2, event: .progress(.zero), onEvent: onEvent)
        let clock = ContinuousClock()
        var phase = clock.now
        func lap() -> String {
            let now = clock.now
            defer { phase = now }
            return String(format: "%.3f s", Self.seconds(now - phase))
        }
        defer { heartbeat.stop() }
        let sourceReadTime = SyncJournal.now()
        let workers = Self.walkers
        let destinationExists = FileStatus.lstat(spec.destination)?.kind == .directory
        let racyWindow =
            journalRacyWindow.map { $0.components.seconds * 1_000_000_000 + $0.components.attoseconds / 1_000_000_000 }
            ?? SyncJournal.racyWindow(source: spec.source, destination: spec.destination)
        let fingerprint = SyncJournal.fingerprint(spec: spec, rsyncVersion: await rsyncVersion())
        let path = SyncJournal.path(directory: directory, fingerprint: fingerprint)

        // A first copy (nothing at the destination: no journal can spare anything) runs in lanes.
        if let entries = laneEntries(spec, excludes: excludes) {
            let (copied, sourceWalk, _) = try await copyInLanes(
                spec, entries: entries, excludes: excludes,
                prepare: { walk in
                    logger.debug("sync journal: source walked", metadata: ["elapsed": "\(lap())"])
                    let check = try precheck(
                        spec, measured: walk.result, excludes: excludes, destinationExists: destinationExists)
                    onEvent(.precheck(check))
                    try refuseIfFull(spec, check)
                    try prepareCopy(spec, journal: path, directory: directory)
                    heartbeat.stop()
                    return check
                }, onEvent: onEvent)
            logger.debug("sync journal: rsync done", metadata: ["elapsed": "\(lap())"])
            var report = copied
            report.mode = .full
            let journalReport = JournalReport(
                used: false, reason: "first copy into an empty destination", comparedPaths: 0, changedPaths: 0,
                written: false)
            return await finish(
                spec, report: report, plan: nil, journalReport: journalReport, fingerprint: fingerprint, path: path,
                sourceWalk: sourceWalk, sourceReadTime: sourceReadTime, racyWindow: racyWindow, started: started,
                onEvent: onEvent)
        }

        async let destinationWalk =
            destinationExists
            ? try? SourceSize.snapshot(root: spec.destination, excludes: ExcludeMatcher([]), workers: workers) : nil
        async let sourceSnapshot = SourceSize.snapshot(root: spec.source, excludes: excludes, workers: workers)
        // The journal loads, and its paths are indexed, while the trees are walked.
        let loaded: Result<(SyncJournal, [PathKey: Int]), SyncJournal.LoadError> = await onOwnThread {
            do {
                let journal = try SyncJournal.load(path: path)
                return .success((journal, journal.pathIndex()))
            } catch let error as SyncJournal.LoadError {
                return .failure(error)
            } catch {
                return .failure(SyncJournal.LoadError(description: "\(error)"))
            }
        }
        let sourceWalk: SourceWalk
        do {
            sourceWalk = try await sourceSnapshot
        } catch let error as TreeWalker.WalkError {
            throw Self.unreadableSource(error)
        }
        let destinationSnapshot = await destinationWalk
        logger.debug(
            "sync journal: trees walked and journal loaded",
            metadata: [
                "elapsed": "\(lap())", "sourceEntries": "\(sourceWalk.entries.count)",
                "destinationEntries": "\(destinationSnapshot?.entries.count ?? 0)",
            ])

        // Precheck from the same walk.
        let check = try precheck(
            spec, measured: sourceWalk.result, excludes: excludes, destinationExists: destinationExists)
        onEvent(.precheck(check))
        try refuseIfFull(spec, check)

        // Decide.
        var plan: SyncJournal.Plan?
        var journalReport = JournalReport(
            used: false, reason: nil, comparedPaths: 0, changedPaths: 0, written: false)
        switch loaded {
        case .failure(let error):
            journalReport.reason = "no usable journal: \(error)"
            if error.missing {
                logger.info("no sync journal yet; running a full rsync", metadata: ["journal": "\(path)"])
            } else {
                logger.warning(
                    "the sync journal is unusable (\(error)); running a full rsync and writing a fresh one",
                    metadata: ["journal": "\(path)"])
            }
        case .success((let journal, _)) where journal.fingerprint != fingerprint:
            journalReport.reason = "the journal belongs to another sync"
            logger.warning(
                "the sync journal belongs to another sync; running a full rsync", metadata: ["journal": "\(path)"])
        case .success((let journal, let index)):
            if let destinationSnapshot, sourceWalk.result.unreadable == 0, destinationSnapshot.result.unreadable == 0 {
                let compared = journal.plan(
                    source: sourceWalk.entries, destination: destinationSnapshot.entries,
                    destinationRoot: SyncJournal.RootIdentity.of(spec.destination), delete: spec.delete,
                    hasExcludes: !spec.excludes.isEmpty, racyWindow: racyWindow, index: index)
                journalReport.used = true
                journalReport.comparedPaths = compared.comparedPaths
                journalReport.changedPaths = compared.changedPaths.count
                if case .full(let reason) = compared.decision {
                    journalReport.reason = reason
                    logger.info("the sync journal cannot prove a partial run safe (\(reason)); running a full rsync")
                } else {
                    plan = compared
                }
            } else {
                journalReport.reason =
                    destinationSnapshot == nil
                    ? "the destination could not be walked" : "parts of the trees could not be read"
            }
        }

        logger.debug("sync journal: compared", metadata: ["elapsed": "\(lap())"])
        if let plan, plan.decision == .unchanged {
            heartbeat.stop()
            let total = sourceWalk.result.entries + 1
            let final = RsyncProgress(
                bytes: 0, percent: 100, bytesPerSecond: 0, seconds: 0, transferredFiles: 0, remainingToCheck: 0,
                totalToCheck: total)
            onEvent(.progress(final))
            logger.info("the sync journal shows nothing changed; rsync not started", metadata: ["journal": "\(path)"])
            var report = Report(
                spec: spec, mode: .journalUnchanged, journal: journalReport, dryRun: false, precheck: check,
                exitCode: 0, severity: .success, message: "nothing changed since the last sync (change journal)",
                hint: nil, failedFiles: [], vanishedFiles: [], destinationFull: false,
                stats: RsyncStats(
                    files: total, createdFiles: 0, deletedFiles: 0, transferredFiles: 0,
                    totalFileBytes: sourceWalk.result.regularBytes, transferredFileBytes: 0, literalBytes: 0),
                lastProgress: final, progressRecords: 0, progressCallbacks: heartbeat.callbacks + 1,
                verification: nil, elapsedSeconds: 0)
            verify(spec, into: &report, onEvent: onEvent)
            report.elapsedSeconds = Self.seconds(ContinuousClock.now - started)
            return report
        }

        try prepareCopy(spec, journal: path, directory: directory)
        var arguments = Rsync.arguments(for: spec, dryRun: false)
        var fileList: [UInt8] = []
        if let plan {
            fileList = Self.fileList(plan.changedPaths)
            arguments.insert(contentsOf: ["--files-from=-", "--from0"], at: arguments.count - 2)
            logger.info(
                "the sync journal found \(plan.changedPaths.count) changed paths; rsync gets only those",
                metadata: ["journal": "\(path)"])
        }
        heartbeat.stop()
        var report = try await copy(
            spec, precheck: check, arguments: arguments, input: fileList, dryRun: false, onEvent: onEvent)
        report.mode = plan == nil ? .full : .journalPartial
        logger.debug("sync journal: rsync done", metadata: ["elapsed": "\(lap())"])
        return await finish(
            spec, report: report, plan: plan, journalReport: journalReport, fingerprint: fingerprint, path: path,
            sourceWalk: sourceWalk, sourceReadTime: sourceReadTime, racyWindow: racyWindow, started: started,
            onEvent: onEvent)
    }

    /// Before a copy: the old journal goes first, whatever happens next; the destination and the journal directory
    /// are created.
    private func prepareCopy(_ spec: SyncSpec, journal path: String, directory: String) throws {
        if unlink(path) != 0, errno != ENOENT {
            logger.warning("cannot remove the old sync journal: \(String(cString: strerror(errno)))")
        }
        try createDestination(spec)
        do {
            try SecureFile.makeDirectory(directory, mode: 0o700)
        } catch {
            logger.warning("cannot create the sync journal directory: \(error)", metadata: ["journal": "\(path)"])
        }
    }

    /// After a copy: verification if asked, then a fresh journal after a clean run.
    private func finish(
        _ spec: SyncSpec, report copied: Report, plan: SyncJournal.Plan?, journalReport: JournalReport,
        fingerprint: String, path: String, sourceWalk: SourceWalk, sourceReadTime: Int64, racyWindow: Int64,
        started: ContinuousClock.Instant, onEvent: @escaping @Sendable (Event) -> Void
    ) async -> Report {
        var report = copied
        var journalReport = journalReport
        let clock = ContinuousClock()
        let phase = clock.now
        // After a full run without excludes the destination is not walked: the journal gets a mark instead
        // (SyncJournal.destinationMark).
        let marked = plan == nil && spec.excludes.isEmpty
        let local = racyWindow > 0 && racyWindow <= 100_000_000
        // rsync's last writes (directory times, set at its very end) are milliseconds old. A mark must fall in a
        // later clock tick (at most 10 ms on a local filesystem); a walk or a re-read must come once they are older
        // than the short racy window, so the next run can trust them (a partial run's journal waits for that
        // itself, after its own preparation). A long window (2 s, filesystems not known to be local) is not waited
        // for; those paths are simply re-checked next time.
        let settled = SyncJournal.now() + racyWindow + 1_000_000
        if local, plan == nil {
            try? await Task.sleep(for: .nanoseconds(marked ? 11_000_000 : racyWindow + 1_000_000))
        }
        verify(spec, into: &report, onEvent: onEvent)
        let clean =
            report.exitCode == 0 && report.failedFiles.isEmpty && report.vanishedFiles.isEmpty
            && report.verification?.mismatch == nil
        if clean, let root = SyncJournal.RootIdentity.of(spec.destination) {
            // The last event again (the final copy record, or the verification's), so the last progress value the
            // coordinator stores stays the run's real last one.
            let last: Event =
                spec.verify != .none ? .verifying(spec.verify) : .progress(report.lastProgress ?? .zero)
            let again = ProgressHeartbeat(
                interval: progressInterval / 2, event: last, onEvent: onEvent, immediately: false)
            let journal: SyncJournal?
            if let plan {
                // A thread of its own: it may sleep until `settled`.
                journal = await onOwnThread {
                    SyncJournal.afterPartialRun(
                        plan: plan, fingerprint: fingerprint, destination: spec.destination, destinationRoot: root,
                        sourceReadTime: sourceReadTime, walkTime: sourceReadTime, racyWindow: racyWindow,
                        rereadAfter: local ? settled : nil)
                }
            } else if marked {
                if sourceWalk.result.unreadable == 0,
                    let mark = await markDestination(spec.destination, racyWindow: local ? racyWindow : nil)
                {
                    journal = await runBlocking {
                        SyncJournal.afterFullRun(
                            source: sourceWalk.entries, fingerprint: fingerprint, destination: mark.root,
                            destinationRoot: root, sourceReadTime: sourceReadTime, mark: mark.mark,
                            destinationReadTime: mark.readTime)
                    }
                } else {
                    journal = nil
                    logger.warning("cannot read the whole source or mark the destination; no sync journal written")
                }
            } else {
                let destinationReadTime = SyncJournal.now()
                if let after = try? await SourceSize.snapshot(
                    root: spec.destination, excludes: ExcludeMatcher([]), workers: Self.walkers),
                    after.result.unreadable == 0, sourceWalk.result.unreadable == 0
                {
                    journal = await runBlocking {
                        SyncJournal.afterFullRun(
                            source: sourceWalk.entries, destination: after.entries, fingerprint: fingerprint,
                            destinationRoot: root, sourceReadTime: sourceReadTime,
                            destinationReadTime: destinationReadTime)
                    }
                } else {
                    journal = nil
                    logger.warning("cannot read the whole trees after the copy; no sync journal written")
                }
            }
            let built = clock.now
            if let journal {
                do {
                    try await runBlocking { try journal.write(to: path) }
                    journalReport.written = true
                } catch {
                    logger.warning("cannot write the sync journal: \(error)", metadata: ["journal": "\(path)"])
                }
            }
            again.stop()
            logger.debug(
                "sync journal: verified and written",
                metadata: [
                    "elapsed": "\(String(format: "%.3f s", Self.seconds(clock.now - phase)))",
                    "built": "\(String(format: "%.3f s", Self.seconds(built - phase)))",
                    "written": "\(journalReport.written)",
                ])
        }
        report.journal = journalReport
        report.elapsedSeconds = Self.seconds(ContinuousClock.now - started)
        return report
    }

    /// Sets the destination root's modification time to its own value, which moves its `ctime` past every write of
    /// the run just done: that `ctime` is the journal's ``SyncJournal/destinationMark``. Then reads the root's own
    /// record, on a local filesystem once the mark is older than `racyWindow`, so the next run can trust it.
    /// `nil` when the root cannot be read or its time set.
    private func markDestination(
        _ destination: String, racyWindow: Int64?
    ) async -> (mark: Int64, root: FileStat, readTime: Int64)? {
        guard let before = FileStat.lstat(root: destination, relative: []),
            setModificationTime(destination, nanoseconds: before.modificationTime),
            let marked = FileStat.lstat(root: destination, relative: [])
        else { return nil }
        if let racyWindow {
            let wait = marked.changeTime + racyWindow + 1_000_000 - SyncJournal.now()
            if wait > 0 { try? await Task.sleep(for: .nanoseconds(min(wait, racyWindow + 1_000_000))) }
        }
        let readTime = SyncJournal.now()
        guard let root = FileStat.lstat(root: destination, relative: []) else { return nil }
        return (marked.changeTime, root, readTime)
    }

    /// The first line of `rsync --version` (part of the journal's fingerprint), `unknown` if it cannot run.
    func rsyncVersion() async -> String {
        do {
            let result = try await Subprocess.run(
                .path(FilePath(Rsync.resolve(rsync.executable))), arguments: ["--version"],
                output: .string(limit: 1 << 16), error: .discarded)
            return result.standardOutput.split(separator: "\n").first.map(String.init) ?? "unknown"
        } catch {
            return "unknown"
        }
    }
}

extension RsyncProgress {
    /// The record sent while nothing is known yet (walking the trees, rsync building its file list).
    static let zero = RsyncProgress(
        bytes: 0, percent: 0, bytesPerSecond: 0, seconds: nil, transferredFiles: nil, remainingToCheck: nil,
        totalToCheck: nil)
}

/// Sends one event at once (unless `immediately` is off) and again every interval until stopped: the journal's
/// walks and write are silent, and the progress contract is at least one update a second (the journal runs it at
/// half the progress interval). Nothing is sent once ``stop()`` has returned.
final class ProgressHeartbeat: Sendable {
    private struct State {
        var stopped = false
        var count = 0
    }

    private let state = Mutex(State())
    private let task = Mutex<Task<Void, Never>?>(nil)
    private let event: SyncEngine.Event
    private let onEvent: @Sendable (SyncEngine.Event) -> Void

    init(
        interval: Duration, event: SyncEngine.Event, onEvent: @escaping @Sendable (SyncEngine.Event) -> Void,
        immediately: Bool = true
    ) {
        self.event = event
        self.onEvent = onEvent
        if immediately { send() }
        let ticker = Task { [self] in
            while true {
                do { try await Task.sleep(for: interval) } catch { return }
                if Task.isCancelled { return }
                send()
            }
        }
        task.withLock { $0 = ticker }
    }

    var callbacks: Int { state.withLock { $0.count } }

    func stop() {
        state.withLock { $0.stopped = true }
        task.withLock { $0?.cancel() }
    }

    private func send() {
        // Under the lock, so that stop() cannot return while an event is on its way.
        state.withLock { state in
            guard !state.stopped else { return }
            state.count += 1
            onEvent(event)
        }
    }
}
