import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

#if canImport(Glibc)
    import Glibc
#endif

extension Muster {
    /// `muster sync SRC DEST --node N [--delete] [--exclude P]… [--verify none|sample|full]`: a `syncTree` task on
    /// one node, followed until it finished, with a progress bar on a terminal.
    ///
    /// Exit codes: 0 copied (vanished source files are a warning), 1 rsync failed or verification found a
    /// difference, 2 bad paths or the free-space precheck refused (nothing copied), or usage.
    struct Sync: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sync",
            abstract: "Copy a directory tree on a node with rsync (a syncTree task), showing its progress.",
            discussion: """
                DEST becomes a copy of the contents of SRC, both paths on the node. Re-running copies only what \
                changed; the source is never modified. Exit codes: 0 ok, 1 failed or verification mismatch, \
                2 usage, bad paths or not enough space (nothing copied).
                """)

        @Argument(help: "Source directory on the node (absolute).")
        var source: String

        @Argument(help: "Destination directory on the node (absolute; created if missing).")
        var destination: String

        @Option(help: "The node id (where DEST is; also SRC unless --from-node).")
        var node: String

        @Option(
            help:
                "SRC is on this other node: its agent serves SRC read-only through an rsync daemon for the task, and --node pulls."
        )
        var fromNode: String?

        @Flag(help: "Delete destination entries that are not in the source.")
        var delete = false

        @Option(name: .customLong("exclude"), help: "rsync --exclude pattern (repeatable).")
        var excludes: [String] = []

        @Option(help: "After the copy: none, sample or full.")
        var verify = "none"

        @Flag(help: "Run rsync with --dry-run: report what would be copied, change nothing.")
        var dryRun = false

        @Flag(help: "Do not use the node's change journal: rsync always walks the whole tree.")
        var noJournal = false

        @Option(
            help: """
                rsync processes for a first copy into an empty destination, each over a share of the source's \
                top-level entries (1 to 16; 1: one rsync). Default: the agent's (4).
                """)
        var lanes: Int?

        @Option(help: "Attempts (a re-run resumes where the last one stopped).")
        var maxAttempts = 1

        @Option(help: "Give up waiting after this long (the task keeps running).")
        var timeout = "24h"

        @OptionGroup var client: ClientOptions

        @Flag(help: "NDJSON on stdout: progress events, then the finished task.")
        var json = false

        func run() async throws {
            guard UUID(uuidString: node) != nil else {
                throw MusterError(
                    .usage, "--node '\(node)' is not a node id (a UUID)", hint: "`muster nodes` lists them")
            }
            guard ["none", "sample", "full"].contains(verify) else {
                throw MusterError(.usage, "--verify must be none, sample or full")
            }
            let limit = try CoordinatorConfiguration.duration(timeout, key: "--timeout")
            var fields: [String: JSONValue] = [
                "source": .string(source), "destination": .string(destination), "delete": .bool(delete),
                "excludes": .array(excludes.map { .string($0) }), "verify": .string(verify), "dryRun": .bool(dryRun),
            ]
            if noJournal { fields["journal"] = .bool(false) }
            if let lanes {
                guard (1...16).contains(lanes) else { throw MusterError(.usage, "--lanes must be between 1 and 16") }
                fields["lanes"] = .number(Double(lanes))
            }
            let spec: JSONValue = .object(fields)
            let admin = try client.client()
            var task: TaskRecord
            var serveTask: TaskRecord?
            if let fromNode {
                guard UUID(uuidString: fromNode) != nil else {
                    throw MusterError(.usage, "--from-node '\(fromNode)' is not a node id (a UUID)")
                }
                guard verify == "none", !dryRun else {
                    throw MusterError(.usage, "--verify and --dry-run need a local source; not with --from-node")
                }
                let tasks = try await admin.send(
                    .POST, "/v1/sync",
                    body: NodeSyncRequest(
                        source: .init(node: fromNode, path: source), destination: .init(node: node, path: destination),
                        delete: delete, excludes: excludes),
                    as: NodeSyncTasks.self)
                task = tasks.pull
                serveTask = tasks.serve
            } else {
                task = try await admin.send(
                    .POST, "/v1/tasks",
                    body: CreateTaskRequest(
                        node: node, kind: TaskKind.syncTree.rawValue, spec: spec, maxAttempts: maxAttempts),
                    as: TaskRecord.self)
            }
            var display = SyncProgressDisplay(json: json, terminal: isatty(STDERR_FILENO) == 1)
            let deadline = ContinuousClock.now + limit
            while !task.state.isFinal {
                guard ContinuousClock.now < deadline else {
                    display.finish()
                    throw MusterError(
                        .timeout,
                        "task \(task.id.uuidString.lowercased()) is still \(task.state.rawValue) after \(timeout)",
                        hint: "`muster tasks show \(task.id.uuidString.lowercased())` shows it later")
                }
                try await Task.sleep(for: .milliseconds(100))
                task = try await admin.send(.GET, "/v1/tasks/\(task.id.uuidString.lowercased())", as: TaskRecord.self)
                // Before the agent's first report, the task's state is the progress (queued, assigned, running).
                display.show(task.progress ?? .object(["phase": .string(task.state.rawValue)]))
            }
            display.finish()
            if let serveTask, task.state != .succeeded {
                // The pull failed: the source node's daemon need not wait for its time limit.
                _ = try? await admin.raw(.POST, "/v1/tasks/\(serveTask.id.uuidString.lowercased())/cancel")
            }
            try display.result(task)
            guard task.state != .succeeded else { return }
            let code = task.error?.code ?? ""
            if !json {
                FileHandle.standardError.write(
                    Data("error: \(task.error?.message ?? "the task \(task.state.rawValue)")\n".utf8))
            }
            throw ExitCode(
                code == MusterError.Code.invalidInput.wireName || code == MusterError.Code.usage.wireName ? 2 : 1)
        }
    }
}

/// Renders `syncTree` progress: a bar on a terminal (stderr), a line per second otherwise, NDJSON with `--json`.
struct SyncProgressDisplay {
    let json: Bool
    let terminal: Bool
    /// What was printed last and when: an unchanged value is printed again only after ``repeatAfter``, so there is
    /// an update at least once a second even while rsync's figures stand still.
    private var lastProgress: JSONValue?
    private var lastShown: ContinuousClock.Instant?
    private var barShown = false
    static let repeatAfter = Duration.milliseconds(800)

    init(json: Bool, terminal: Bool) {
        self.json = json
        self.terminal = terminal
    }

    mutating func show(_ progress: JSONValue) {
        let now = ContinuousClock.now
        if progress == lastProgress, let lastShown, now - lastShown < Self.repeatAfter { return }
        lastProgress = progress
        lastShown = now
        if json {
            // Unbuffered, so a consumer of the pipe sees each event as it happens.
            let event: JSONValue = .object(["event": .string("progress"), "progress": progress])
            FileHandle.standardOutput.write(Data((event.jsonText + "\n").utf8))
            return
        }
        let line = Self.describe(progress)
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            barShown = true
        } else {
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
    }

    mutating func finish() {
        if barShown { FileHandle.standardError.write(Data("\n".utf8)) }
        barShown = false
    }

    func result(_ task: TaskRecord) throws {
        if json {
            let event: JSONValue = .object(["event": .string("result"), "task": try JSONValue(encoding: task)])
            print(event.jsonText)
            return
        }
        guard task.state == .succeeded, case .object(let report)? = task.result else { return }
        var parts: [String] = []
        if case .object(let stats)? = report["stats"] {
            if case .number(let files)? = stats["transferredFiles"] { parts.append("\(Int(files)) files transferred") }
        }
        if case .number(let seconds)? = report["elapsedSeconds"] { parts.append(String(format: "%.1f s", seconds)) }
        if case .array(let vanished)? = report["vanishedFiles"], !vanished.isEmpty {
            parts.append("warning: \(vanished.count) source files vanished during the copy")
        }
        print("synced \(task.id.uuidString.lowercased()): " + parts.joined(separator: ", "))
    }

    /// `[#########.........]  45%  1.2 GiB  40.1 MiB/s  ETA 0:00:12  files 1234/5000`.
    static func describe(_ progress: JSONValue) -> String {
        guard case .object(let p) = progress else { return progress.jsonText }
        func number(_ key: String) -> Double? {
            if case .number(let v)? = p[key] { return v }
            return nil
        }
        let phase: String = if case .string(let s)? = p["phase"] { s } else { "?" }
        switch phase {
        case "precheck":
            return "precheck: source \(Output.bytes(UInt64(number("sourceBytes") ?? 0))), "
                + "\(Output.bytes(UInt64(number("availableBytes") ?? 0))) free"
        case "verifying":
            return "verifying…"
        case "pending", "assigned", "running":
            return "task \(phase)…"
        default:
            let percent = Int(number("percent") ?? 0)
            let filled = max(0, min(20, percent / 5))
            var line = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 20 - filled) + "] "
            line += String(format: "%3d%%  ", percent) + Output.bytes(UInt64(number("bytes") ?? 0))
            line += "  " + Output.bytes(UInt64(number("bytesPerSecond") ?? 0)) + "/s"
            if let eta = number("etaSeconds") {
                let s = Int(eta)
                line += String(format: "  ETA %d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
            }
            if let checked = number("filesChecked"), let total = number("filesTotal") {
                line += "  files \(Int(checked))/\(Int(total))"
            }
            return line
        }
    }
}
