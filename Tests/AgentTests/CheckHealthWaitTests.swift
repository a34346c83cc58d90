import Foundation
import Shared
import Synchronization
import Testing

@testable import Agent

/// `checkHealth` with `waitSeconds`: probes are retried until they pass, against a real HTTP server on loopback that
/// answers 503 to its first requests and 200 after that (by count, not by time, so a loaded machine changes nothing).
@Suite("checkHealth: waitSeconds retries until the probes pass")
struct CheckHealthWaitTests {
    /// Answers 503 to the first `unhealthyAnswers` requests, then 200 (`Int.max`: never healthy).
    static func withSlowServer(
        unhealthyAnswers: Int, _ body: @Sendable (Int) async throws -> Void
    ) async throws {
        let answered = AnswerCounter()
        try await TestHTTPServer.with(
            answer: { _ in
                let status = answered.next() <= unhealthyAnswers ? "503 Service Unavailable" : "200 OK"
                return "HTTP/1.0 \(status)\r\n\r\nok"
            }, body)
    }

    final class AnswerCounter: Sendable {
        private let count = Atomic<Int>(0)
        /// 1 for the first request, 2 for the second…
        func next() -> Int { count.add(1, ordering: .relaxed).newValue }
    }

    static func run(_ spec: CheckHealth.Spec) async throws -> JSONValue {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("muster-wait-\(UUID())").path
        return try await CheckHealth(collector: HealthCollector(stateDirectory: state)).run(
            spec: try JSONValue(encoding: spec), progress: TaskProgressReporter { _ in })
    }

    @Test func waitSecondsRetriesUntilHealthy() async throws {
        try await Self.withSlowServer(unhealthyAnswers: 2) { port in
            let value = try await Self.run(
                .init(http: ["http://127.0.0.1:\(port)/healthz"], timeoutMilliseconds: 5000, waitSeconds: 60))
            let report = try value.decode(CheckHealth.Report.self)
            #expect(report.healthy)
            #expect(report.rounds == 3, "rounds: \(String(describing: report.rounds))")
            #expect(report.checks.map(\.detail) == ["HTTP 200"])
        }
    }

    @Test func withoutWaitSecondsOneRoundFails() async throws {
        try await Self.withSlowServer(unhealthyAnswers: 1) { port in
            await #expect {
                _ = try await Self.run(.init(http: ["http://127.0.0.1:\(port)/healthz"], timeoutMilliseconds: 5000))
            } throws: { error in
                guard let failure = error as? TaskFailure, failure.code == MusterError.Code.verificationFailed.wireName,
                    let report = try? failure.details?.decode(CheckHealth.Report.self)
                else { return false }
                return report.rounds == nil && report.checks.map(\.detail) == ["HTTP 503"]
            }
        }
    }

    @Test func waitSecondsEndsWithTheLastRoundsFailure() async throws {
        try await Self.withSlowServer(unhealthyAnswers: .max) { port in
            await #expect {
                _ = try await Self.run(
                    .init(http: ["http://127.0.0.1:\(port)/healthz"], timeoutMilliseconds: 5000, waitSeconds: 1))
            } throws: { error in
                guard let failure = error as? TaskFailure,
                    failure.code == MusterError.Code.verificationFailed.wireName,
                    let report = try? failure.details?.decode(CheckHealth.Report.self)
                else { return false }
                return (report.rounds ?? 0) >= 1 && !report.healthy && report.checks.map(\.detail) == ["HTTP 503"]
                    && failure.message.contains("rounds")
            }
        }
    }

    @Test func waitSecondsOutOfRangeIsInvalidInput() async throws {
        await #expect {
            _ = try await Self.run(.init(paths: ["/"], waitSeconds: 3601))
        } throws: { ($0 as? TaskFailure)?.code == MusterError.Code.invalidInput.wireName }
    }
}
