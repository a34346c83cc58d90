import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Follows a workflow until it settles and shows it: one line per step as it finishes, the running step's
/// progress (a bar on a terminal, rewritten in place), NDJSON events with `--json`, then the summary.
struct WorkflowFollower {
    let admin: AdminClient
    let json: Bool
    let terminal: Bool

    init(admin: AdminClient, json: Bool) {
        self.admin = admin
        self.json = json
        self.terminal = isatty(STDERR_FILENO) == 1
    }

    /// Polls the workflow until it is no longer running or rolling back.
    func follow(_ id: UUID, timeout: Duration) async throws -> WorkflowRecord {
        let path = "/v1/workflows/\(id.uuidString.lowercased())"
        var workflow = try await admin.send(.GET, path, as: WorkflowRecord.self)
        var reported: [String: WorkflowStepState] = [:]
        var lastLine = ""
        var lastLineAt = ContinuousClock.now - .seconds(10)
        var lineShown = false
        let deadline = ContinuousClock.now + timeout
        while true {
            let rollingBack = workflow.state == .rollingBack || workflow.state == .rolledBack
                || workflow.state == .rollbackFailed
            let steps = (rollingBack ? workflow.rollback : workflow.steps) ?? []
            for (index, step) in steps.enumerated() {
                let key = "\(rollingBack ? "r" : "f")\(index)#\(step.epoch)"
                guard step.state != .pending, reported[key] != step.state else { continue }
                // A running step is shown by its progress line; finished ones get their own line.
                if step.state == .running {
                    reported[key] = .running
                    if json { emit(["event": "step", "index": index + 1, "name": step.name, "state": "running"]) }
                    continue
                }
                reported[key] = step.state
                if lineShown {
                    FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
                    lineShown = false
                }
                if json {
                    var event: [String: Any] = [
                        "event": "step", "index": index + 1, "name": step.name, "state": step.state.rawValue,
                    ]
                    if let seconds = step.seconds { event["seconds"] = (seconds * 1000).rounded() / 1000 }
                    if let error = step.error { event["error"] = ["code": error.code, "message": error.message] }
                    emit(event)
                } else {
                    FileHandle.standardError.write(
                        Data((Self.stepLine(step, index: index, of: steps.count, rollback: rollingBack) + "\n").utf8))
                }
            }
            if workflow.state.isSettled { break }
            if let current = steps.indices.contains(workflow.currentStep) ? steps[workflow.currentStep] : nil,
                current.state == .running
            {
                let progress = Self.describe(current)
                let line = "[\(workflow.currentStep + 1)/\(steps.count)] \(current.name): \(progress)"
                if json {
                    if line != lastLine, let value = current.task?.progress {
                        emit(["event": "progress", "index": workflow.currentStep + 1, "name": current.name],
                             progress: value)
                    }
                } else if terminal {
                    FileHandle.standardError.write(Data("\r\u{1B}[K\(String(line.prefix(160)))".utf8))
                    lineShown = true
                } else if line != lastLine && ContinuousClock.now - lastLineAt > .seconds(2) {
                    FileHandle.standardError.write(Data("\(line)\n".utf8))
                    lastLineAt = ContinuousClock.now
                }
                lastLine = line
            }
            guard ContinuousClock.now < deadline else {
                if lineShown { FileHandle.standardError.write(Data("\n".utf8)) }
                throw MusterError(
                    .timeout, "workflow \(id.uuidString.lowercased()) is still \(workflow.state.rawValue)",
                    hint: "it goes on; `muster workflow show \(id.uuidString.lowercased()) --follow` follows it again")
            }
            try await Task.sleep(for: .milliseconds(200))
            workflow = try await admin.send(.GET, path, as: WorkflowRecord.self)
        }
        if lineShown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        return workflow
    }

    private func emit(_ object: [String: Any], progress: JSONValue? = nil) {
        var object = object
        if let progress, let data = progress.jsonText.data(using: .utf8),
            let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        {
            object["progress"] = value
        }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    /// `[ 3/10] stop app.service  ok  0.31 s`.
    static func stepLine(_ step: WorkflowStep, index: Int, of count: Int, rollback: Bool) -> String {
        let width = String(count).count
        let number = String(repeating: " ", count: max(0, width - String(index + 1).count)) + "\(index + 1)"
        let mark =
            switch step.state {
            case .succeeded: "ok"
            case .failed: "FAILED"
            case .running: "running"
            case .pending: "pending"
            }
        var line = "\(rollback ? "rollback " : "")[\(number)/\(count)] \(step.name)  \(mark)"
        if let seconds = step.seconds { line += String(format: "  %.2f s", seconds) }
        if let summary = summary(step) { line += "  (\(summary))" }
        if let error = step.error { line += "\n" + failureLines(error).map { "        " + $0 }.joined(separator: "\n") }
        return line
    }

    /// A failure as lines: a precheck or verification lists each failed check on its own line.
    static func failureLines(_ error: TaskFailure) -> [String] {
        guard case .array(let checks)? = error.details?["checks"] else { return ["\(error.code): \(error.message)"] }
        let failed = checks.filter { $0["ok"] == .bool(false) }
        guard !failed.isEmpty else { return ["\(error.code): \(error.message)"] }
        var lines = ["\(error.code): \(failed.count) of \(checks.count) checks failed:"]
        for check in failed {
            let name: String =
                if case .string(let n)? = check["name"] { n } else if case .string(let t)? = check["target"] { t } else { "?" }
            let detail: String = if case .string(let d)? = check["detail"] { d } else { "" }
            lines.append("  ✗ \(name): \(detail)")
        }
        return lines
    }

    /// A short account of a finished step's result.
    static func summary(_ step: WorkflowStep) -> String? {
        guard step.state == .succeeded, case .object(let result)? = step.result else { return nil }
        func number(_ value: JSONValue?) -> Double? {
            if case .number(let n)? = value { return n }
            return nil
        }
        switch TaskKind(rawValue: step.kind) {
        case .migrateSQLite:
            if case .array(let tables)? = result["tables"] {
                let rows = tables.compactMap { number($0["rowsWritten"]) }.reduce(0, +)
                return "\(tables.count) tables, \(Int(rows)) rows, verified"
            }
        case .syncTree:
            if case .object(let stats)? = result["stats"], let bytes = number(stats["totalFileBytes"]) {
                let files = number(stats["transferredFiles"]).map { ", \(Int($0)) files copied" } ?? ""
                return Output.bytes(UInt64(bytes)) + files
            }
        case .rewriteJSONPaths:
            if let values = number(result["valuesRewritten"]), let files = number(result["filesChanged"]) {
                return "\(Int(values)) values in \(Int(files)) files"
            }
        case .backup:
            if case .array(let items)? = result["items"], let bytes = number(result["bytes"]) {
                return "\(items.count) files, \(Output.bytes(UInt64(bytes)))"
            }
        case .precheck:
            if case .array(let checks)? = result["checks"] { return "\(checks.count) checks passed" }
        case .checkHealth:
            if case .array(let checks)? = result["checks"] { return "\(checks.count) checks passed" }
        default:
            break
        }
        return nil
    }

    /// The running step's progress in a line.
    static func describe(_ step: WorkflowStep) -> String {
        guard let task = step.task else { return "starting…" }
        guard let progress = task.progress, case .object(let p) = progress else {
            return task.attempts > 1 ? "\(task.state.rawValue) (attempt \(task.attempts))" : "\(task.state.rawValue)…"
        }
        func number(_ key: String) -> Double? {
            if case .number(let v)? = p[key] { return v }
            return nil
        }
        if case .string(let table)? = p["table"], let done = number("rowsDone"), let total = number("rowsTotal") {
            let percent = total > 0 ? Int(done * 100 / total) : 100
            let filled = max(0, min(20, percent / 5))
            return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 20 - filled) + "] "
                + "\(table) \(Int(done))/\(Int(total)) rows"
                + (number("rowsPerSecond").map { "  \(Int($0)) rows/s" } ?? "")
        }
        if step.kind == TaskKind.syncTree.rawValue { return SyncProgressDisplay.describe(progress) }
        return progress.jsonText
    }

    /// The closing summary: outcome, maintenance window and per-step times, or the failure and the exact rollback.
    static func render(_ workflow: WorkflowRecord) -> String {
        let id = workflow.id.uuidString.lowercased()
        var lines: [String] = []
        switch workflow.state {
        case .succeeded:
            lines.append("\(workflow.kind) \(id): succeeded")
        case .failed:
            let failed = workflow.steps.firstIndex { $0.state == .failed }
            lines.append(
                "\(workflow.kind) \(id): FAILED at step \(failed.map { "\($0 + 1) (\(workflow.steps[$0].name))" } ?? "?")")
            if let error = failed.flatMap({ workflow.steps[$0].error }) {
                lines.append(contentsOf: failureLines(error).map { "  " + $0 })
            }
        case .rolledBack:
            lines.append("\(workflow.kind) \(id): rolled back — the standalone service is back as it was")
        case .rollbackFailed:
            lines.append("\(workflow.kind) \(id): ROLLBACK FAILED — \(workflow.error?.message ?? "a step failed")")
        case .running, .rollingBack:
            lines.append("\(workflow.kind) \(id): \(workflow.state.rawValue), step \(workflow.currentStep + 1)")
        }
        if let window = workflow.maintenanceWindow {
            let end = window.end ?? workflow.finishedAt ?? Date()
            lines.append(
                String(format: "maintenance window: %.2f s", end.timeIntervalSince(window.start))
                    + (window.end == nil ? " (the service was not verified in cluster mode)" : " (service stopped → verified)"))
        }
        for (index, step) in workflow.steps.enumerated() {
            let time = step.seconds.map { String(format: "%8.2f s", $0) } ?? "       - "
            lines.append("  \(time)  [\(index + 1)] \(step.name)  \(step.state.rawValue)")
        }
        if let rollback = workflow.rollback {
            lines.append("rollback:")
            for (index, step) in rollback.enumerated() {
                let time = step.seconds.map { String(format: "%8.2f s", $0) } ?? "       - "
                lines.append("  \(time)  [\(index + 1)] \(step.name)  \(step.state.rawValue)")
            }
        }
        switch workflow.state {
        case .failed:
            let plan = workflow.rollbackPlan
            let seed = workflow.kind == SeedPlanner.workflowKind
            lines.append("")
            lines.append(
                (seed ? "The standalone server's SQLite files and directories were only read. " : "")
                    + "To continue from the failed step (after fixing the cause):")
            lines.append("  muster workflow resume \(id)")
            lines.append(seed ? "To return to the standalone service instead:" : "To undo what it did instead:")
            lines.append("  muster workflow rollback \(id)")
            if plan.isEmpty {
                lines.append("which has nothing to undo (no step changed the node yet)")
            } else {
                lines.append("which runs:")
                for (index, step) in plan.enumerated() { lines.append("  \(index + 1). \(step.name)") }
                if seed {
                    lines.append("and leaves the migrated tables and the copies on the volume for inspection.")
                }
            }
        case .rollbackFailed:
            lines.append("")
            lines.append("Fix the cause, then continue the rollback: muster workflow rollback \(id)")
        default:
            break
        }
        return lines.joined(separator: "\n")
    }
}
