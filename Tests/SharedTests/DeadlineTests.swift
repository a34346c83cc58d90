import Synchronization
import Testing

@testable import Shared

private struct Expired: Error, Equatable {}
private struct BodyFailed: Error, Equatable {}

@Suite("withDeadline")
struct DeadlineTests {
    @Test func returnsTheBodysResultWhenItIsFirst() async throws {
        let value = try await withDeadline(.seconds(60), onTimeout: { Expired() }) { 42 }
        #expect(value == 42)
    }

    @Test func passesTheBodysErrorThrough() async {
        await #expect(throws: BodyFailed.self) {
            try await withDeadline(.seconds(60), onTimeout: { Expired() }) { () async throws -> Int in
                throw BodyFailed()
            }
        }
    }

    /// The case a task-group race gets wrong: a body that ignores cancellation must not hold the caller.
    @Test func releasesTheCallerAtTheDeadlineEvenIfTheBodyIgnoresCancellation() async throws {
        let gate = Gate()
        await #expect(throws: Expired.self) {
            try await withDeadline(.milliseconds(20), onTimeout: { Expired() }) { () async -> Int in
                await gate.wait()  // never resumed before the deadline, and deaf to cancellation
                return 1
            }
        }
        gate.open()
    }

    @Test func callerCancellationEndsTheWait() async throws {
        let gate = Gate()
        let waiter = Task {
            try await withDeadline(.seconds(3600), onTimeout: { Expired() }) { () async -> Int in
                await gate.wait()
                return 1
            }
        }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        gate.open()
    }
}

/// A one-shot latch that ignores task cancellation.
private final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
