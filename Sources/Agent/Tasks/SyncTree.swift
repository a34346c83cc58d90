import Foundation
import Shared

/// `syncTree`: copies a directory tree on the node with ``SyncEngine`` (rsync with a free-space precheck, exit
/// codes mapped, optional verification) and streams rsync's progress to the coordinator.
///
/// Spec: `{"source": "/abs", "destination": "/abs", "delete": false, "excludes": [], "verify": "none|sample|full",
/// "dryRun": false, "journal": true, "lanes": 4}` (all but the paths optional; `journal: false` turns the change journal
/// off; `lanes`: rsync processes for a first copy into an empty destination).
/// Progress: `{"phase": "precheck|copying|verifying", "bytes", "percent", "bytesPerSecond", "etaSeconds",
/// "filesTransferred", "filesChecked", "filesTotal"}` at most and at least once a second while rsync runs (the
/// `verifying` record keeps the last copy figures). Result: the engine's report. Re-running copies only what
/// changed; with the journal (default) a re-run hands rsync only the changed paths, or starts no rsync at all.
struct SyncTree: TaskHandler {
    struct Spec: Codable, Sendable, Equatable {
        /// A local directory, or `rsync://muster@HOST:PORT/MODULE/` to pull from another node's daemon.
        var source: String?
        var destination: String?
        var delete: Bool?
        var excludes: [String]?
        var verify: SyncSpec.Verify?
        var dryRun: Bool?
        /// Use the change journal (default true): a re-run hands rsync only what changed since the last clean sync.
        var journal: Bool?
        /// rsync processes for a first copy into an empty destination (default 4, 1 to 16; see
        /// ``SyncEngine/copyLanes``).
        var lanes: Int?
        /// For an `rsync://` source: the daemon's per-task secret.
        var secret: String?
        /// Node → node, source side: serve `serve.path` read-only through an rsync daemon until the pull is done.
        var serve: RsyncDaemon.Serve?
    }

    let engine: SyncEngine
    var stateDirectory: String

    func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let input: Spec
        do {
            input = try spec.decode(Spec.self)
        } catch {
            throw TaskFailure(
                code: .invalidInput,
                message: "the syncTree spec must look like {\"source\": \"/abs/src\", \"destination\": \"/abs/dst\", "
                    + "\"delete\": false, \"excludes\": [], \"verify\": \"sample\"}: \(error)")
        }
        if let serve = input.serve {
            let daemon = RsyncDaemon(
                executable: engine.rsync.executable, stateDirectory: stateDirectory, logger: engine.logger)
            let report = try await daemon.serve(serve) {
                await progress(
                    .object([
                        "phase": .string("serving"), "address": .string(serve.address),
                        "port": .number(Double(serve.port)),
                    ]))
            }
            guard report.transferred else {
                throw TaskFailure(
                    code: .timeout, message: "nobody pulled from the rsync daemon within \(serve.maxSeconds ?? 3600) s",
                    details: try JSONValue(encoding: report))
            }
            return try JSONValue(encoding: report)
        }
        guard let source = input.source, let destination = input.destination else {
            throw TaskFailure(
                code: .invalidInput, message: "the syncTree spec needs a source and a destination (or serve)")
        }
        var engine = self.engine
        if let lanes = input.lanes {
            guard (1...SyncEngine.maximumCopyLanes).contains(lanes) else {
                throw TaskFailure(
                    code: .invalidInput,
                    message: "lanes must be between 1 and \(SyncEngine.maximumCopyLanes), not \(lanes)")
            }
            engine.copyLanes = lanes
        }
        let sync = SyncSpec(
            source: source, destination: destination, delete: input.delete ?? false,
            excludes: input.excludes ?? [], verify: input.verify ?? .none)
        // The engine reports synchronously; a child task forwards the events in order over the session.
        let (events, continuation) = AsyncStream<SyncEngine.Event>.makeStream(bufferingPolicy: .bufferingNewest(64))
        return try await withThrowingTaskGroup(of: JSONValue?.self) { group in
            group.addTask {
                // The verifying phase repeats the last copy figures, so the final progress still says how much was
                // copied.
                var lastCopy: [String: JSONValue] = [:]
                for await event in events {
                    var value = Self.progress(event)
                    if case .object(let object) = value {
                        if case .progress = event { lastCopy = object }
                        if case .verifying = event { value = .object(lastCopy.merging(object) { _, new in new }) }
                    }
                    await progress(value)
                }
                return nil
            }
            defer { group.cancelAll() }
            let report: SyncEngine.Report
            do {
                if source.hasPrefix("rsync://") {
                    report = try await engine.pull(sync, secret: input.secret ?? "", stateDirectory: stateDirectory) {
                        continuation.yield($0)
                    }
                } else {
                    report = try await engine.run(
                        sync, dryRun: input.dryRun ?? false, journal: input.journal ?? true
                    ) { continuation.yield($0) }
                }
            } catch {
                continuation.finish()
                throw error
            }
            continuation.finish()
            // Deliver the last progress record before the result.
            while let next = try await group.next() { _ = next }
            let value = try JSONValue(encoding: report)
            if let error = report.error {
                throw TaskFailure(
                    code: error.code, message: error.message + (error.hint.map { " (\($0))" } ?? ""), details: value)
            }
            return value
        }
    }

    /// One progress value for the coordinator.
    static func progress(_ event: SyncEngine.Event) -> JSONValue {
        switch event {
        case .precheck(let check):
            return .object([
                "phase": .string("precheck"), "sourceBytes": .number(Double(check.sourceBytes)),
                "availableBytes": .number(Double(check.availableBytes)),
                "filesTotal": .number(Double(check.sourceEntries)),
            ])
        case .progress(let record):
            var object: [String: JSONValue] = [
                "phase": .string("copying"), "bytes": .number(Double(record.bytes)),
                "percent": .number(Double(record.percent)), "bytesPerSecond": .number(record.bytesPerSecond),
            ]
            if let seconds = record.seconds, !record.isComplete { object["etaSeconds"] = .number(Double(seconds)) }
            if let files = record.transferredFiles { object["filesTransferred"] = .number(Double(files)) }
            if let checked = record.checkedFiles { object["filesChecked"] = .number(Double(checked)) }
            if let total = record.totalToCheck { object["filesTotal"] = .number(Double(total)) }
            return .object(object)
        case .verifying(let mode):
            return .object(["phase": .string("verifying"), "verify": .string(mode.rawValue)])
        }
    }
}
