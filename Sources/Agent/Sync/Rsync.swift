import Logging
import Shared
import Subprocess
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Runs one rsync process, streaming its stdout (progress records, `--stats`) and stderr (per-file problems)
/// in two child tasks, and reports progress through a throttled callback.
struct Rsync: Sendable {
    /// A user to run rsync as (`setuid`/`setgid` in the child, no supplementary groups).
    struct Credentials: Sendable, Equatable {
        var userID: UInt32
        var groupID: UInt32
    }

    /// What a finished rsync did.
    struct Outcome: Sendable {
        var status: RsyncExitStatus
        var stats: RsyncStats
        /// The last progress record rsync printed.
        var lastProgress: RsyncProgress?
        /// Progress records rsync printed / callbacks delivered.
        var progressRecords: Int
        var progressCallbacks: Int
        /// stderr lines (the first ``Rsync/maximumStderrLines``).
        var stderrLines: [String]
        /// Non-progress, non-stats stdout records (e.g. `--dry-run` file names are not printed without `-v`).
        var otherOutput: [String]
    }

    /// `rsync` (looked up in `PATH`) or an absolute path.
    var executable: String = "rsync"
    /// Run as this user instead of the agent's (tests of permission-denied files).
    var credentials: Credentials?
    /// stderr lines kept for parsing; a source with more broken files than this is summarised by count.
    static let maximumStderrLines = 10_000

    /// The fixed options: archive with hard links, ACLs and xattrs, numeric ids, resumable partial files,
    /// whole-transfer progress with the total known up front, plain numbers, and the stats block.
    /// `--remove-source-files` is never passed: the source is never changed.
    static let baseOptions = [
        "-aHAX", "--numeric-ids", "--partial", "--info=progress2", "--no-inc-recursive", "--no-h", "--stats",
    ]

    /// The argument vector (without the executable) for `spec`.
    static func arguments(for spec: SyncSpec, dryRun: Bool) -> [String] {
        var arguments = baseOptions
        if spec.delete { arguments.append("--delete") }
        for pattern in spec.excludes { arguments.append("--exclude=\(pattern)") }
        if dryRun { arguments.append("--dry-run") }
        // Trailing slashes: copy the source's contents into the destination, not the directory itself.
        arguments.append(SyncSpec.normalized(spec.source).withTrailingSlash)
        arguments.append(SyncSpec.normalized(spec.destination).withTrailingSlash)
        return arguments
    }

    /// Runs rsync with `arguments` until it exits; `input` is its standard input (e.g. for `--files-from=-`).
    ///
    /// `onProgress` is called for a new record at most once per `interval`, and after 0.8 of an `interval` without
    /// a call with the latest record again (or an all-zero record while rsync is still building the file list),
    /// so there is at least one call per `interval` even when the ticker wakes late; always with the final record. It is called from the reading tasks: keep it quick.
    /// - Throws: ``MusterError`` when rsync cannot be started; cancellation.
    func run(
        arguments: [String], input: [UInt8] = [], interval: Duration, logger: Logger,
        onProgress: @escaping @Sendable (RsyncProgress) -> Void
    ) async throws -> Outcome {
        try await run(
            arguments: arguments, standardInput: .array(input), interval: interval, logger: logger,
            onProgress: onProgress)
    }

    /// ``run(arguments:input:interval:logger:onProgress:)`` with any standard input, e.g. the read end of a pipe.
    func run<Input: InputProtocol>(
        arguments: [String], standardInput: Input, interval: Duration, logger: Logger,
        onProgress: @escaping @Sendable (RsyncProgress) -> Void
    ) async throws -> Outcome {
        // Resolve PATH once ourselves: swift-subprocess's `.name` forks an attempt per PATH entry (~20 ms each).
        let executable: Executable = .path(FilePath(Self.resolve(self.executable)))
        var options = PlatformOptions()
        if let credentials {
            options.userID = credentials.userID
            options.groupID = credentials.groupID
            options.supplementaryGroups = []
        }
        // On cancellation: SIGTERM (rsync removes nothing, keeps --partial data), then SIGKILL after 5 s.
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        let throttle = ProgressThrottle(interval: interval, onProgress: onProgress)
        logger.debug("starting rsync", metadata: ["arguments": "\(arguments)"])
        let result: ExecutionResult<Streams, SequenceOutput, SequenceOutput>
        do {
            result = try await Subprocess.run(
                executable, arguments: Arguments(arguments), platformOptions: options, input: standardInput,
                output: .sequence, error: .sequence
            ) { execution in
                try await withThrowingTaskGroup(of: Void.self) { outer in
                    // The ticker keeps updates coming while rsync is silent (building the file list, one huge file).
                    outer.addTask { await throttle.tick() }
                    let streams = try await withThrowingTaskGroup(of: Streams.self) { group in
                        group.addTask {
                            var splitter = RsyncOutputSplitter()
                            var streams = Streams()
                            for try await buffer in execution.standardOutput {
                                let records = buffer.withUnsafeBytes { splitter.feed($0) }
                                streams.absorbStdout(records, throttle: throttle)
                                // rsync writes a progress record per file, ~70 bytes, so most reads returned
                                // one: 100k reads (each an epoll registration, a continuation and a task
                                // switch) were most of muster-agent's CPU during a first copy. A pause after
                                // a small read lets the pipe (64 KiB) gather the next ones; progress is
                                // reported once a second, so 20 ms later changes nothing.
                                if buffer.count < 16 << 10 { try? await Task.sleep(for: .milliseconds(20)) }
                            }
                            if let rest = splitter.finish() { streams.absorbStdout([rest], throttle: throttle) }
                            streams.finishStdout(throttle: throttle)
                            return streams
                        }
                        group.addTask {
                            var splitter = RsyncOutputSplitter()
                            var streams = Streams()
                            for try await buffer in execution.standardError {
                                let records = buffer.withUnsafeBytes { splitter.feed($0) }
                                for record in records { streams.absorbStderr(record) }
                            }
                            if let rest = splitter.finish() { streams.absorbStderr(rest) }
                            return streams
                        }
                        var merged = Streams()
                        for try await part in group { merged.merge(part) }
                        return merged
                    }
                    outer.cancelAll()
                    return streams
                }
            }
        } catch let error as CancellationError {
            throw error
        } catch {
            throw MusterError(
                .internal, "cannot run \(self.executable)", hint: "install rsync ≥ 3.1 (apt-get install rsync)",
                cause: UnderlyingError(error))
        }
        throttle.finish()
        let streams = result.closureResult
        let code: Int32 =
            switch result.terminationStatus {
            case .exited(let code): code
            case .signaled(let signal): 128 + signal
            }
        return Outcome(
            status: RsyncExitStatus(code: code, stderrLines: streams.stderrLines), stats: streams.stats,
            lastProgress: throttle.latest, progressRecords: streams.progressRecords,
            progressCallbacks: throttle.callbacks, stderrLines: streams.stderrLines, otherOutput: streams.other)
    }

    /// `name` itself if it contains a `/`, else the first executable `name` in `PATH` (or `name` unchanged, so
    /// the launch fails with rsync's name in the error).
    static func resolve(_ name: String) -> String {
        guard !name.contains("/") else { return name }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return name
    }

    /// What one reading task collected.
    struct Streams: Sendable {
        var stats = RsyncStats()
        var progressRecords = 0
        var stderrLines: [String] = []
        var droppedStderrLines = 0
        var other: [String] = []

        /// The newest record that looks like a progress record and is not parsed yet, and when one was last parsed.
        private var pendingProgress: String?
        private var lastParse: ContinuousClock.Instant?

        /// The records of one read. rsync rewrites its progress record once per file (100k records for a tree of
        /// 100k small files, mostly one per read) and only the newest one matters to the throttle: parsing every
        /// one was half of muster-agent's CPU during a first copy (`perf`), taken from the 2 cores rsync's copy
        /// needs. Records that look like progress records (a number first) are counted and the newest is kept;
        /// it is parsed at most every 50 ms and at the end (``finishStdout(throttle:)``). Everything else goes to
        /// the stats or `other` at once; a kept record that turns out not to parse goes to `other` then.
        mutating func absorbStdout(_ records: [String], throttle: ProgressThrottle) {
            for record in records {
                if RsyncProgress.looksLikeRecord(record) {
                    progressRecords += 1
                    pendingProgress = record
                } else if !stats.absorb(record), other.count < 1000 {
                    other.append(record)
                }
            }
            let now = ContinuousClock.now
            if pendingProgress != nil, lastParse.map({ now - $0 >= .milliseconds(50) }) ?? true {
                lastParse = now
                parsePending(throttle: throttle)
            }
        }

        /// End of stdout: the last kept record is parsed (the final record of a transfer is always delivered).
        mutating func finishStdout(throttle: ProgressThrottle) {
            parsePending(throttle: throttle)
        }

        private mutating func parsePending(throttle: ProgressThrottle) {
            guard let record = pendingProgress else { return }
            pendingProgress = nil
            if let progress = RsyncProgress.parse(record) {
                throttle.record(progress)
            } else {
                progressRecords -= 1
                if other.count < 1000 { other.append(record) }
            }
        }

        mutating func absorbStderr(_ line: String) {
            if stderrLines.count < Rsync.maximumStderrLines {
                stderrLines.append(line)
            } else {
                droppedStderrLines += 1
            }
        }

        mutating func merge(_ other: Streams) {
            if other.progressRecords > 0 || other.stats != RsyncStats() {
                stats = other.stats
                progressRecords += other.progressRecords
                self.other += other.other
            }
            stderrLines += other.stderrLines
            droppedStderrLines += other.droppedStderrLines
        }
    }
}

/// Decides when the progress callback fires. Shared by the stdout task and the ticker, hence the `Mutex`.
final class ProgressThrottle: Sendable {
    private struct State {
        var latest: RsyncProgress?
        var lastDelivery: ContinuousClock.Instant
        var deliveredLatest = false
        var callbacks = 0
    }

    private let interval: Duration
    private let onProgress: @Sendable (RsyncProgress) -> Void
    private let state: Mutex<State>
    private let clock = ContinuousClock()

    init(interval: Duration, onProgress: @escaping @Sendable (RsyncProgress) -> Void) {
        self.interval = interval
        self.onProgress = onProgress
        // As if the last delivery were one interval ago, so the first record is delivered at once.
        self.state = Mutex(State(lastDelivery: ContinuousClock().now - interval))
    }

    /// The longest the ticker lets pass without a delivery: 0.8 of the interval, so that a wake-up delayed by a
    /// busy machine (2 cores shared with rsync and the writeback) still delivers within the promised interval.
    private var silence: Duration { interval * 0.8 }

    var latest: RsyncProgress? { state.withLock { $0.latest } }
    var callbacks: Int { state.withLock { $0.callbacks } }

    /// A new record from rsync: delivered now if the last delivery is at least one interval old.
    func record(_ progress: RsyncProgress) {
        let now = clock.now
        let deliver = state.withLock { state -> Bool in
            state.latest = progress
            guard now - state.lastDelivery >= interval else {
                state.deliveredLatest = false
                return false
            }
            state.lastDelivery = now
            state.deliveredLatest = true
            state.callbacks += 1
            return true
        }
        if deliver { onProgress(progress) }
    }

    /// Runs until cancelled: whenever ``silence`` passes without a delivery, delivers the latest record again.
    func tick() async {
        while !Task.isCancelled {
            let due = state.withLock { $0.lastDelivery } + silence
            do { try await Task.sleep(until: due, clock: clock) } catch { return }
            let now = clock.now
            let progress = state.withLock { state -> RsyncProgress? in
                guard now - state.lastDelivery >= silence else { return nil }
                state.lastDelivery = now
                state.deliveredLatest = true
                state.callbacks += 1
                return state.latest
                    ?? RsyncProgress(
                        bytes: 0, percent: 0, bytesPerSecond: 0, seconds: nil, transferredFiles: nil,
                        remainingToCheck: nil, totalToCheck: nil)
            }
            if let progress { onProgress(progress) }
        }
    }

    /// End of stream: delivers the final record if it has not been delivered yet.
    func finish() {
        let progress = state.withLock { state -> RsyncProgress? in
            guard !state.deliveredLatest, let latest = state.latest else { return nil }
            state.deliveredLatest = true
            state.callbacks += 1
            return latest
        }
        if let progress { onProgress(progress) }
    }
}

extension String {
    fileprivate var withTrailingSlash: String { hasSuffix("/") ? self : self + "/" }
}
