import Foundation
import Shared
import Testing

@testable import Agent

@Suite("TaskJournal: durable finished-task records")
struct TaskJournalTests {
    static func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "muster-journal-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func resultsAndAcknowledgementsSurviveAReopenAndATornLastLine() throws {
        let state = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: state) }
        let first = UUID()
        let second = UUID()
        do {
            let journal = try TaskJournal(stateDirectory: state)
            try journal.recordFinished(
                TaskResult(
                    taskID: first, attempt: 1, outcome: .succeeded, result: .object(["n": .number(1)]),
                    finishedAt: Date(timeIntervalSince1970: 1)))
            try journal.recordFinished(
                TaskResult(
                    taskID: second, attempt: 2, outcome: .failed,
                    error: TaskFailure(code: .verificationFailed, message: "probe failed"),
                    finishedAt: Date(timeIntervalSince1970: 2)))
            try journal.recordAcknowledged(first)
            #expect(journal.unacknowledged.map(\.taskID) == [second])
            #expect(SecureFile.mode(of: journal.path) == 0o600)
        }
        // A crash in the middle of the next append leaves half a line.
        let handle = try #require(FileHandle(forWritingAtPath: "\(state)/tasks/journal.jsonl"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"kind":"finished","taskID":"#.utf8))
        try handle.close()

        let reopened = try TaskJournal(stateDirectory: state)
        #expect(reopened.result(of: first)?.result == .object(["n": .number(1)]))
        #expect(reopened.result(of: second)?.error?.message == "probe failed")
        #expect(reopened.unacknowledged.map(\.taskID) == [second])
        // Acknowledging twice, or an unknown task, writes nothing new.
        try reopened.recordAcknowledged(first)
        try reopened.recordAcknowledged(UUID())
        #expect(reopened.unacknowledged.map(\.taskID) == [second])
    }
}
