import Foundation
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The agent's durable record of finished tasks (DESIGN §4): append-only JSON lines under
/// `<state-dir>/tasks/journal.jsonl`, each line written with `fsync` before the result is sent.
///
/// A task delivered again after it finished is answered from here instead of running twice; results the
/// coordinator has not acknowledged yet are re-sent after a reconnect (their ids go into `hello`). A torn last
/// line (crash mid-write) is skipped when loading.
public final class TaskJournal: Sendable {
    /// One line of the journal.
    struct Line: Codable {
        enum Kind: String, Codable {
            case finished
            case acknowledged
        }
        var kind: Kind
        var taskID: UUID
        var result: TaskResult?
    }

    private struct State {
        var finished: [UUID: TaskResult] = [:]
        var acknowledged: Set<UUID> = []
    }

    public let path: String
    private let state: Mutex<State>

    /// Opens (and creates the directory of) the journal, loading what it holds.
    /// - Throws: ``MusterError`` `.io` when the directory cannot be created.
    public init(stateDirectory: String) throws {
        let directory = "\(stateDirectory)/tasks"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw MusterError(
                .io, "cannot create the task journal directory \(directory)", cause: UnderlyingError(error))
        }
        path = "\(directory)/journal.jsonl"
        var loaded = State()
        if let data = FileManager.default.contents(atPath: path) {
            let decoder = WireCoding.makeDecoder()
            for line in data.split(separator: UInt8(ascii: "\n")) {
                guard let entry = try? decoder.decode(Line.self, from: Data(line)) else { continue }
                switch entry.kind {
                case .finished:
                    if let result = entry.result { loaded.finished[entry.taskID] = result }
                case .acknowledged:
                    loaded.acknowledged.insert(entry.taskID)
                }
            }
        }
        state = Mutex(loaded)
    }

    /// The journaled result of a task, if it finished here.
    public func result(of taskID: UUID) -> TaskResult? {
        state.withLock { $0.finished[taskID] }
    }

    /// Results the coordinator has not acknowledged, oldest first.
    public var unacknowledged: [TaskResult] {
        state.withLock { state in
            state.finished.values.filter { !state.acknowledged.contains($0.taskID) }.sorted {
                $0.finishedAt < $1.finishedAt
            }
        }
    }

    /// Records a finished task durably (written and fsynced before this returns).
    /// - Throws: ``MusterError`` `.io`.
    public func recordFinished(_ result: TaskResult) throws {
        try append(Line(kind: .finished, taskID: result.taskID, result: result))
        state.withLock { $0.finished[result.taskID] = result }
    }

    /// Records that the coordinator stored a result (it is no longer re-sent).
    public func recordAcknowledged(_ taskID: UUID) throws {
        let known = state.withLock { $0.finished[taskID] != nil && !$0.acknowledged.contains(taskID) }
        guard known else { return }
        try append(Line(kind: .acknowledged, taskID: taskID, result: nil))
        state.withLock { _ = $0.acknowledged.insert(taskID) }
    }

    private func append(_ line: Line) throws {
        var data = try WireCoding.makeEncoder().encode(line)
        data.append(UInt8(ascii: "\n"))
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw MusterError(.io, "cannot open the task journal \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let written = data.withUnsafeBytes { buffer -> Int in
            guard let base = buffer.baseAddress else { return 0 }
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, base + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return -1
                }
                offset += n
            }
            return offset
        }
        guard written == data.count, fsync(fd) == 0 else {
            throw MusterError(.io, "cannot write the task journal \(path): \(String(cString: strerror(errno)))")
        }
    }
}
