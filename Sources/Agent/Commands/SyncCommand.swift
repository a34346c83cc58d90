import ArgumentParser
import Foundation
import Logging
import Shared
import Synchronization

/// `muster-agent sync SRC DEST`: copies a directory tree with rsync on this node, standalone.
///
/// Exit codes: 0 copied (vanished source files are a warning), 1 rsync failed or verification found a
/// difference, 2 bad paths or the free-space precheck refused (nothing copied). Syntax errors that
/// ArgumentParser itself reports (unknown flag, missing argument) keep its exit code 64.
struct SyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Copy a directory tree with rsync (archive, hard links, ACLs, xattrs, numeric ids), with progress.",
        discussion: """
            The destination becomes a copy of the source's contents. Re-running copies only what changed; the \
            source is never modified. Exit codes: 0 ok, 1 failed or verification mismatch, 2 usage or precheck.
            """)

    @Argument(help: "Source directory (absolute path).")
    var source: String

    @Argument(help: "Destination directory (absolute path; created if missing).")
    var destination: String

    @Flag(help: "Delete destination entries that are not in the source.")
    var delete = false

    @Option(name: .customLong("exclude"), help: "rsync --exclude pattern (repeatable).")
    var excludes: [String] = []

    @Option(help: "After the copy: none, sample (metadata + sha256 of a sample) or full (sha256 of every file).")
    var verify: SyncSpec.Verify = .none

    @Flag(help: "NDJSON events on stdout (precheck, progress, verifying, summary or error).")
    var json = false

    @Flag(help: "Run rsync with --dry-run: report what would be copied, change nothing.")
    var dryRun = false

    @Flag(
        help: """
            Do not use the change journal: always run rsync over the whole tree (and write no journal). By default \
            a re-run compares both trees with the journal of the last clean sync and hands rsync only what changed.
            """)
    var noJournal = false

    @Option(
        help: """
            rsync processes for a first copy into an empty destination, each over a share of the source's top-level \
            entries (1: one rsync). Re-runs always use one.
            """)
    var lanes = SyncEngine.defaultCopyLanes

    @Option(name: .long, help: "State directory (the change journals are in sync-journals/). Env: MUSTER_STATE_DIR.")
    var stateDir: String =
        ProcessInfo.processInfo.environment["MUSTER_STATE_DIR"] ?? AgentConfiguration.defaultStateDirectory

    @Option(help: .hidden)
    var rsyncPath: String = "rsync"

    @Option(name: .long, help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "warning"

    func validate() throws {
        guard (1...SyncEngine.maximumCopyLanes).contains(lanes) else {
            throw ValidationError("--lanes must be between 1 and \(SyncEngine.maximumCopyLanes), not \(lanes)")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .warning
        // Logs go to stderr: stdout carries the summary or the NDJSON events.
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "muster-agent.sync")
        logger.logLevel = level
        let spec = SyncSpec(
            source: source, destination: destination, delete: delete, excludes: excludes, verify: verify)
        let output = SyncOutput(json: json, terminal: isatty(STDERR_FILENO) == 1)
        var engine = SyncEngine(
            rsync: Rsync(executable: rsyncPath),
            journalDirectory: SyncEngine.journalDirectory(stateDirectory: stateDir),
            logger: logger)
        engine.copyLanes = lanes
        let report: SyncEngine.Report
        do {
            report = try await engine.run(spec, dryRun: dryRun, journal: !noJournal) { output.event($0) }
        } catch let error as MusterError {
            output.failure(error)
            throw ExitCode(Self.exitCode(for: error))
        }
        output.summary(report)
        if let error = report.error { throw ExitCode(Self.exitCode(for: error)) }
    }

    /// 2 for bad paths and precheck refusals (nothing was copied), 1 for everything else that failed.
    static func exitCode(for error: MusterError) -> Int32 {
        error.code == .usage || error.code == .invalidInput ? 2 : 1
    }
}

extension SyncSpec.Verify: ExpressibleByArgument {}

/// Renders engine events: NDJSON on stdout, or a progress bar (TTY) / one line per update on stderr.
final class SyncOutput: Sendable {
    private struct State {
        var lastLineLength = 0
    }

    private let json: Bool
    private let terminal: Bool
    /// Events come from rsync's reader task and the throttle's ticker; the lock keeps lines whole.
    private let state = Mutex(State())

    init(json: Bool, terminal: Bool) {
        self.json = json
        self.terminal = terminal
    }

    func event(_ event: SyncEngine.Event) {
        switch event {
        case .precheck(let check):
            if json {
                emit(JSONEvent(event: "precheck", precheck: check))
                return
            }
            write(
                "source \(SyncEngine.format(check.sourceBytes)) in \(check.sourceEntries) entries, "
                    + "\(SyncEngine.format(check.availableBytes)) free at the destination\n", to: .standardError)
        case .progress(let progress):
            if json {
                emit(JSONEvent(event: "progress", progress: progress))
                return
            }
            let line = Self.progressLine(progress, bar: terminal)
            if terminal {
                state.withLock { state in
                    let padding = String(repeating: " ", count: max(0, state.lastLineLength - line.count))
                    state.lastLineLength = line.count
                    FileHandle.standardError.write(Data(("\r" + line + padding).utf8))
                }
            } else {
                write(line + "\n", to: .standardError)
            }
        case .verifying(let mode):
            if json {
                emit(JSONEvent(event: "verifying", verify: mode))
                return
            }
            endBar()
            write("verifying (\(mode.rawValue))…\n", to: .standardError)
        }
    }

    func summary(_ report: SyncEngine.Report) {
        if json {
            var event = JSONEvent(event: "summary", report: report)
            event.error = report.error.map(JSONEvent.ErrorBody.init)
            emit(event)
            return
        }
        endBar()
        let stats = report.stats
        var text = report.dryRun ? "dry run: would transfer " : "transferred "
        if report.mode == .journalUnchanged {
            text = "nothing changed since the last sync (rsync not started): transferred "
        }
        text += "\(stats.transferredFiles ?? 0) of \(stats.files ?? 0) files, "
        text +=
            "\(SyncEngine.format(stats.transferredFileBytes ?? 0)) of \(SyncEngine.format(stats.totalFileBytes ?? 0))"
        text += String(format: " in %.1f s\n", report.elapsedSeconds)
        if report.severity == .warning { text += "warning: \(report.message)\n" }
        if let verification = report.verification, verification.mismatch == nil {
            text +=
                "verified (\(verification.mode.rawValue)): \(verification.entriesCompared) entries, "
                + "\(verification.filesHashed) files hashed\n"
        }
        write(text, to: .standardOutput)
        if let error = report.error { write("error: \(error)\n", to: .standardError) }
    }

    func failure(_ error: MusterError) {
        if json {
            var event = JSONEvent(event: "error")
            event.error = JSONEvent.ErrorBody(error)
            emit(event)
            return
        }
        endBar()
        write("error: \(error)\n", to: .standardError)
    }

    /// `[########            ]  42%  1.20 GiB  98.1 MiB/s  ETA 0:00:12  files 1234/5678` (bar on a TTY only).
    static func progressLine(_ progress: RsyncProgress, bar: Bool) -> String {
        var line = ""
        if bar {
            let width = 24
            let filled = min(width, progress.percent * width / 100)
            line += "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] "
        }
        line += String(format: "%3d%%  ", progress.percent)
        line += SyncEngine.format(progress.bytes) + "  " + SyncEngine.format(UInt64(progress.bytesPerSecond)) + "/s"
        if let seconds = progress.seconds {
            let clock = String(format: "%d:%02d:%02d", seconds / 3600, seconds / 60 % 60, seconds % 60)
            line += progress.isComplete ? "  elapsed \(clock)" : "  ETA \(clock)"
        }
        if let checked = progress.checkedFiles, let total = progress.totalToCheck {
            line += "  files \(checked)/\(total)"
        } else if progress.bytes == 0 {
            line += "  building file list"
        }
        return line
    }

    private func endBar() {
        guard terminal, !json else { return }
        state.withLock { state in
            if state.lastLineLength > 0 { FileHandle.standardError.write(Data("\n".utf8)) }
            state.lastLineLength = 0
        }
    }

    private enum Stream { case standardOutput, standardError }

    private func write(_ text: String, to stream: Stream) {
        state.withLock { _ in
            let handle = stream == .standardOutput ? FileHandle.standardOutput : FileHandle.standardError
            handle.write(Data(text.utf8))
        }
    }

    private func emit(_ event: JSONEvent) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        guard let data = try? encoder.encode(event) else { return }
        state.withLock { _ in FileHandle.standardOutput.write(data + Data("\n".utf8)) }
    }

    /// One NDJSON line.
    struct JSONEvent: Encodable {
        struct ErrorBody: Encodable {
            var code: String
            var message: String
            var hint: String?
            init(_ error: MusterError) {
                code = error.code.wireName
                message = error.message
                hint = error.hint
            }
        }

        var event: String
        var time = Date()
        var precheck: SyncEngine.Precheck?
        var progress: RsyncProgress?
        var verify: SyncSpec.Verify?
        var report: SyncEngine.Report?
        var error: ErrorBody?
    }
}
