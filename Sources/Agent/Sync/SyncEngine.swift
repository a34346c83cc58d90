import Foundation
import Logging
import Shared

/// Copies a directory tree with rsync: validates the spec, checks free space, runs rsync with streamed
/// progress, maps the exit code, and optionally verifies the copy.
///
/// The `syncTree` task and `muster-agent sync` both drive this; neither changes the source (rsync never gets
/// `--remove-source-files`, and verification only reads).
struct SyncEngine: Sendable {
    /// What the engine reports while it works.
    enum Event: Sendable {
        case precheck(Precheck)
        case progress(RsyncProgress)
        case verifying(SyncSpec.Verify)
    }

    /// The free-space check before copying.
    struct Precheck: Sendable, Equatable, Codable {
        /// Bytes the source occupies (regular files rounded up to 4 KiB blocks, hard links once, 4 KiB per
        /// directory), excludes applied.
        var sourceBytes: UInt64
        var sourceEntries: Int
        /// Of `sourceBytes`, what the destination already holds (same path, same size); computed only when the
        /// whole source would not fit, so a re-run onto a nearly full volume is not refused.
        var alreadyPresentBytes: UInt64
        /// Free bytes on the destination's filesystem.
        var availableBytes: UInt64
        /// `(sourceBytes − alreadyPresentBytes) × (1 + margin)`.
        var requiredBytes: UInt64
        var fits: Bool { requiredBytes <= availableBytes }
    }

    /// How a run decided what rsync had to do (see ``SyncJournal``).
    enum Mode: String, Sendable, Equatable, Codable {
        /// rsync over the whole tree (no journal, journal off, dry run, or the journal could not prove less).
        case full
        /// rsync with `--files-from` on the paths the journal found changed.
        case journalPartial = "journal-partial"
        /// The journal proved nothing changed: rsync was not started.
        case journalUnchanged = "journal-unchanged"
    }

    /// What the change journal did in a run.
    struct JournalReport: Sendable, Equatable, Codable {
        /// Used to decide the run (a journal loaded and compared), else why not, or why a full run was needed.
        var used: Bool
        var reason: String?
        /// Paths compared with the journal and paths found changed (handed to rsync in a partial run).
        var comparedPaths: Int
        var changedPaths: Int
        /// A fresh journal was written after the run.
        var written: Bool
    }

    /// The result of a run that got as far as starting rsync, or as deciding it need not start.
    struct Report: Sendable, Codable {
        var spec: SyncSpec
        var mode: Mode = .full
        /// rsync processes that copied at once (a first copy in lanes, see ``SyncEngine/copyLanes``); `nil`: one.
        var lanes: Int?
        /// `nil` when the journal was not involved (off, dry run, pull from another node).
        var journal: JournalReport?
        var dryRun: Bool
        var precheck: Precheck
        var exitCode: Int32
        var severity: RsyncExitStatus.Severity
        /// rsync's outcome in words (see ``RsyncExitStatus/message(limit:)``).
        var message: String
        var hint: String?
        var failedFiles: [RsyncExitStatus.FileProblem]
        var vanishedFiles: [String]
        var destinationFull: Bool
        var stats: RsyncStats
        var lastProgress: RsyncProgress?
        var progressRecords: Int
        var progressCallbacks: Int
        var verification: SyncVerifier.Report?
        var elapsedSeconds: Double

        /// Copied (possibly with vanished-file warnings) and, if asked, verified without a difference.
        var succeeded: Bool { severity != .failure && verification?.mismatch == nil }

        /// The failure as a ``MusterError``, `nil` when ``succeeded``.
        var error: MusterError? {
            if severity == .failure {
                return MusterError(destinationFull ? .io : .internal, message, hint: hint)
            }
            if let mismatch = verification?.mismatch {
                return MusterError(
                    .verificationFailed, "verification found a difference: \(mismatch)",
                    hint: "re-run the sync; if it persists, check the destination's storage")
            }
            return nil
        }
    }

    var rsync = Rsync()
    /// Progress callbacks at most and at least this often (see ``Rsync/run(arguments:interval:logger:onProgress:)``).
    var progressInterval: Duration = .seconds(1)
    /// Extra free space required on top of the source size.
    var spaceMargin: Double = 0.10
    /// Where change journals live (`<state-dir>/sync-journals`); `nil`: no journal, every run is a full rsync.
    var journalDirectory: String?
    /// rsync processes for a first copy into an empty destination (each over a share of the source's top-level
    /// entries, see `SyncEngine+Lanes.swift`); 1 copies with one rsync.
    var copyLanes = SyncEngine.defaultCopyLanes
    static let defaultCopyLanes = 4
    static let maximumCopyLanes = 16
    /// The journal's racy window (``SyncJournal/racyWindow``); tests that rewrite files within it shorten it.
    /// `nil`: per filesystem (``SyncJournal/racyWindow(source:destination:)``).
    var journalRacyWindow: Duration?
    var logger: Logger

    init(
        rsync: Rsync = Rsync(), progressInterval: Duration = .seconds(1), spaceMargin: Double = 0.10,
        journalDirectory: String? = nil, logger: Logger
    ) {
        self.rsync = rsync
        self.progressInterval = progressInterval
        self.spaceMargin = spaceMargin
        self.journalDirectory = journalDirectory
        self.logger = logger
    }

    /// The journal directory below an agent state directory.
    static func journalDirectory(stateDirectory: String) -> String { stateDirectory + "/sync-journals" }

    // MARK: - Precheck

    /// Measures the source and the destination's free space.
    /// - Throws: ``MusterError`` when the source is not a readable directory.
    func precheck(_ spec: SyncSpec) async throws -> Precheck {
        let excludes = ExcludeMatcher(spec.excludes)
        let measured: SourceSize.Result
        do {
            // All cores: rsync has not started yet, and this walk is the precheck's whole cost.
            measured = try await SourceSize.measure(root: spec.source, excludes: excludes, workers: Self.walkers)
        } catch let error as TreeWalker.WalkError {
            throw Self.unreadableSource(error)
        }
        return try precheck(
            spec, measured: measured, excludes: excludes,
            destinationExists: FileStatus.lstat(spec.destination)?.kind == .directory)
    }

    /// The precheck for a source already measured: the destination's free space against the source's size.
    func precheck(
        _ spec: SyncSpec, measured: SourceSize.Result, excludes: ExcludeMatcher, destinationExists: Bool
    ) throws -> Precheck {
        let total = measured.bytes
        let available: UInt64
        do {
            available = try TreeWalker.availableBytes(at: spec.destination)
        } catch {
            throw MusterError(.invalidInput, "cannot measure free space at the destination: \(error)")
        }
        var check = Precheck(
            sourceBytes: total, sourceEntries: measured.entries, alreadyPresentBytes: 0, availableBytes: available,
            requiredBytes: withMargin(total))
        if !check.fits, destinationExists {
            // A re-run only writes what is missing; count what is already there before refusing.
            check.alreadyPresentBytes = alreadyPresent(spec, excludes: excludes)
            check.requiredBytes = withMargin(total - min(total, check.alreadyPresentBytes))
        }
        return check
    }

    func withMargin(_ bytes: UInt64) -> UInt64 {
        UInt64((Double(bytes) * (1 + spaceMargin)).rounded(.up))
    }

    /// Space an entry takes: regular files rounded up to 4 KiB (once per hard-link group), 4 KiB per directory.
    private static func footprint(_ entry: TreeEntry, seenLinks: inout Set<FileIdentity>) -> UInt64 {
        switch entry.kind {
        case .directory: return 4096
        case .regular:
            if entry.linkCount > 1, !seenLinks.insert(FileIdentity(device: entry.device, inode: entry.inode)).inserted {
                return 0
            }
            return (entry.size + 4095) / 4096 * 4096
        case .symlink, .other: return 0
        }
    }

    /// Bytes of source files the destination already has at the same path with the same size.
    func alreadyPresent(_ spec: SyncSpec, excludes: ExcludeMatcher) -> UInt64 {
        var sizes: [[UInt8]: UInt64] = [:]
        try? TreeWalker.walk(root: spec.destination, sorted: false, strict: false, excludes: excludes) { entry in
            if entry.kind == .regular {
                sizes[entry.path] = entry.size
            } else if entry.kind == .directory {
                sizes[entry.path] = 0
            }
        }
        var present: UInt64 = 0
        var seenLinks = Set<FileIdentity>()
        try? TreeWalker.walk(root: spec.source, sorted: false, strict: false, excludes: excludes) { entry in
            let footprint = Self.footprint(entry, seenLinks: &seenLinks)
            switch entry.kind {
            case .regular where sizes[entry.path] == entry.size: present += footprint
            case .directory where sizes[entry.path] != nil: present += footprint
            default: break
            }
        }
        return present
    }

    private struct FileIdentity: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    // MARK: - Run

    /// Validates, prechecks, copies and (if asked) verifies.
    ///
    /// With a ``journalDirectory`` and `journal` on (and not a dry run), the run goes through the change journal
    /// (``runWithJournal(_:started:directory:onEvent:)``): a re-run hands rsync only what changed, or nothing.
    ///
    /// - Returns: the report, also when rsync failed or verification found a difference (see ``Report/error``).
    /// - Throws: ``MusterError`` with code `usage` for a bad spec, `invalidInput` when the source is not a
    ///   directory or the destination lacks space (nothing was copied); `internal` when rsync cannot be started.
    func run(
        _ spec: SyncSpec, dryRun: Bool = false, journal: Bool = true,
        onEvent: @escaping @Sendable (Event) -> Void = { _ in }
    ) async throws -> Report {
        let started = ContinuousClock.now
        try spec.validate()
        guard FileStatus.lstat(spec.source)?.kind == .directory else {
            throw MusterError(
                .invalidInput, "the source '\(spec.source)' is not a directory", hint: "sync copies directory trees")
        }
        if let kind = FileStatus.lstat(spec.destination)?.kind, kind != .directory {
            throw MusterError(.invalidInput, "the destination '\(spec.destination)' exists and is not a directory")
        }
        if journal, !dryRun, let journalDirectory {
            return try await runWithJournal(spec, started: started, directory: journalDirectory, onEvent: onEvent)
        }
        // A first copy runs in lanes (SyncEngine+Lanes.swift); its walk feeds the lanes and serves the precheck.
        let excludes = ExcludeMatcher(spec.excludes)
        if !dryRun, let entries = laneEntries(spec, excludes: excludes) {
            var (report, _, _) = try await copyInLanes(
                spec, entries: entries, excludes: excludes,
                prepare: { walk in
                    let check = try precheck(spec, measured: walk.result, excludes: excludes, destinationExists: false)
                    onEvent(.precheck(check))
                    try refuseIfFull(spec, check)
                    try createDestination(spec)
                    return check
                }, onEvent: onEvent)
            verify(spec, into: &report, onEvent: onEvent)
            report.elapsedSeconds = Self.seconds(ContinuousClock.now - started)
            return report
        }
        let check = try await precheck(spec)
        onEvent(.precheck(check))
        try refuseIfFull(spec, check)
        if !dryRun { try createDestination(spec) }
        let arguments = Rsync.arguments(for: spec, dryRun: dryRun)
        var report = try await copy(spec, precheck: check, arguments: arguments, dryRun: dryRun, onEvent: onEvent)
        if !dryRun { verify(spec, into: &report, onEvent: onEvent) }
        report.elapsedSeconds = Self.seconds(ContinuousClock.now - started)
        return report
    }

    /// Throws the precheck's refusal when the copy does not fit.
    func refuseIfFull(_ spec: SyncSpec, _ check: Precheck) throws {
        guard check.fits else {
            throw MusterError(
                .invalidInput,
                "not enough space at '\(spec.destination)': the copy needs \(Self.format(check.requiredBytes)) "
                    + "(\(Self.format(check.sourceBytes - min(check.sourceBytes, check.alreadyPresentBytes))) + "
                    + "\(Int(spaceMargin * 100))% margin) but only \(Self.format(check.availableBytes)) is free",
                hint: "free space or use a bigger volume; nothing was copied")
        }
    }

    func createDestination(_ spec: SyncSpec) throws {
        do {
            try FileManager.default.createDirectory(atPath: spec.destination, withIntermediateDirectories: true)
        } catch {
            throw MusterError(.io, "cannot create the destination '\(spec.destination)'", cause: UnderlyingError(error))
        }
    }

    /// Runs rsync with `arguments` and turns its outcome into a report (without verification and elapsed time).
    func copy(
        _ spec: SyncSpec, precheck check: Precheck, arguments: [String], input: [UInt8] = [], dryRun: Bool,
        onEvent: @escaping @Sendable (Event) -> Void
    ) async throws -> Report {
        let outcome = try await rsync.run(
            arguments: arguments, input: input, interval: progressInterval, logger: logger
        ) {
            onEvent(.progress($0))
        }
        let status = outcome.status
        logger.info(
            "rsync finished",
            metadata: ["code": "\(status.code)", "transferred": "\(outcome.stats.transferredFiles ?? -1)"])
        let report = Report(
            spec: spec, dryRun: dryRun, precheck: check, exitCode: status.code, severity: status.severity,
            message: status.message(), hint: status.hint, failedFiles: status.failedFiles,
            vanishedFiles: status.vanishedFiles, destinationFull: status.destinationFull, stats: outcome.stats,
            lastProgress: outcome.lastProgress, progressRecords: outcome.progressRecords,
            progressCallbacks: outcome.progressCallbacks, verification: nil, elapsedSeconds: 0)
        return report
    }

    /// Verifies the copy if the spec asks for it and rsync did not fail.
    func verify(_ spec: SyncSpec, into report: inout Report, onEvent: @escaping @Sendable (Event) -> Void) {
        if report.severity != .failure, spec.verify != .none {
            onEvent(.verifying(spec.verify))
            let verifier = SyncVerifier(spec: spec, compareOwners: geteuid() == 0 && rsync.credentials == nil)
            do {
                report.verification = try verifier.verify()
            } catch {
                report.verification = SyncVerifier.Report(
                    mode: spec.verify, entriesCompared: 0, filesHashed: 0, bytesHashed: 0,
                    mismatch: .init(path: spec.destination, problem: "cannot read for verification: \(error)"))
            }
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// `1.23 GiB`-style sizes for messages.
    static func format(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.2f", value) + " " + units[unit]
    }
}
