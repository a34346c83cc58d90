import Foundation
import Shared
import Testing

@testable import Coordinator

@Suite("TaskStateMachine: transitions, leases, retries, duplicates")
struct TaskStateMachineTests {
    let policy = TaskRetryPolicy(leaseDuration: .seconds(30), backoffBase: .seconds(2), backoffCap: .seconds(10))
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func at(_ seconds: TimeInterval) -> Date { t0.addingTimeInterval(seconds) }

    @Test func happyPath() {
        var m = TaskStateMachine(maxAttempts: 3, policy: policy)
        #expect(m.assign(owner: "c/1", now: at(0)) == .deliver(attempt: 1))
        #expect(m.state == .assigned)
        #expect(m.leaseOwner == "c/1")
        #expect(m.leaseExpiresAt == at(30))
        #expect(m.accepted(attempt: 1, now: at(1)) == .update)
        #expect(m.state == .running)
        #expect(m.leaseExpiresAt == at(31))
        #expect(m.progress(now: at(5)) == .update)
        #expect(m.leaseExpiresAt == at(35))
        #expect(m.result(.succeeded, attempt: 1, now: at(6)) == .finish(.succeeded))
        #expect(m.state == .succeeded)
        #expect(m.leaseOwner == nil && m.leaseExpiresAt == nil)
    }

    @Test func onlyPendingTasksPastTheirBackoffAreAssigned() {
        var m = TaskStateMachine(maxAttempts: 3, notBefore: at(10), policy: policy)
        #expect(m.assign(owner: "c/1", now: at(9)) == .none)
        #expect(m.state == .pending)
        #expect(m.assign(owner: "c/1", now: at(10)) == .deliver(attempt: 1))
        // Assigned once: a second claimer finds nothing to do.
        #expect(m.assign(owner: "c/2", now: at(10)) == .none)
        #expect(m.leaseOwner == "c/1")
    }

    @Test func failedAttemptsBackOffExponentiallyThenGiveUp() {
        var m = TaskStateMachine(maxAttempts: 3, policy: policy)
        _ = m.assign(owner: "c/1", now: at(0))
        #expect(m.result(.failed, attempt: 1, now: at(1)) == .retry(notBefore: at(3)))
        #expect(m.state == .pending)
        #expect(m.leaseOwner == nil)
        #expect(m.assign(owner: "c/1", now: at(2)) == .none)
        #expect(m.assign(owner: "c/1", now: at(3)) == .deliver(attempt: 2))
        #expect(m.result(.failed, attempt: 2, now: at(4)) == .retry(notBefore: at(8)))
        #expect(m.assign(owner: "c/1", now: at(8)) == .deliver(attempt: 3))
        #expect(m.result(.failed, attempt: 3, now: at(9)) == .finish(.failed))
        #expect(m.state == .failed)
        #expect(m.attempts == 3)
    }

    @Test func aFailureAnotherAttemptCannotChangeFailsAtOnce() {
        var m = TaskStateMachine(maxAttempts: 3, policy: policy)
        _ = m.assign(owner: "c/1", now: at(0))
        let verification = TaskFailure(code: .verificationFailed, message: "2 of 5 prechecks failed")
        #expect(!TaskRetryPolicy.isRetryable(verification))
        #expect(TaskRetryPolicy.isRetryable(TaskFailure(code: .io, message: "disk full")))
        #expect(TaskRetryPolicy.isRetryable(nil))
        #expect(m.result(.failed, attempt: 1, retryable: false, now: at(1)) == .finish(.failed))
        #expect(m.state == .failed && m.attempts == 1)
    }

    @Test func backoffIsCapped() {
        #expect(policy.backoff(afterAttempt: 1) == .seconds(2))
        #expect(policy.backoff(afterAttempt: 2) == .seconds(4))
        #expect(policy.backoff(afterAttempt: 3) == .seconds(8))
        #expect(policy.backoff(afterAttempt: 4) == .seconds(10))
        #expect(policy.backoff(afterAttempt: 1000) == .seconds(10))
    }

    @Test func expiredLeasesRetryAndTheLastOneFails() {
        var m = TaskStateMachine(maxAttempts: 2, policy: policy)
        _ = m.assign(owner: "c/1", now: at(0))
        _ = m.accepted(attempt: 1, now: at(1))
        #expect(m.leaseExpired(now: at(30)) == .none)  // lease runs to 31
        #expect(m.renewLease(owner: "c/2", now: at(20)) == .none)  // another connection cannot renew it
        #expect(m.renewLease(owner: "c/1", now: at(20)) == .update)
        #expect(m.leaseExpired(now: at(49)) == .none)
        #expect(m.leaseExpired(now: at(50)) == .retry(notBefore: at(52)))
        #expect(m.state == .pending)
        #expect(m.assign(owner: "c/3", now: at(52)) == .deliver(attempt: 2))
        guard case .giveUp(let failure) = m.leaseExpired(now: at(82)) else {
            Issue.record("expected the task to give up")
            return
        }
        #expect(failure.code == MusterError.Code.timeout.wireName)
        #expect(m.state == .failed)
    }

    @Test func resultsForFinishedTasksAreDuplicatesAndStaleMessagesAreIgnored() {
        var m = TaskStateMachine(maxAttempts: 3, policy: policy)
        _ = m.assign(owner: "c/1", now: at(0))
        _ = m.leaseExpired(now: at(31))
        _ = m.assign(owner: "c/2", now: at(40))
        // Attempt 1 still reports after attempt 2 was handed out.
        #expect(m.accepted(attempt: 1, now: at(41)) == .stale)
        #expect(m.result(.failed, attempt: 1, now: at(41)) == .stale)
        #expect(m.state == .assigned)
        // Success from the older attempt still finishes the task (kinds are idempotent).
        #expect(m.result(.succeeded, attempt: 1, now: at(42)) == .finish(.succeeded))
        #expect(m.result(.succeeded, attempt: 2, now: at(43)) == .duplicateResult)
        #expect(m.result(.failed, attempt: 2, now: at(43)) == .duplicateResult)
        #expect(m.progress(now: at(44)) == .stale)
        #expect(m.state == .succeeded)
    }

    @Test func cancellation() {
        var pending = TaskStateMachine(maxAttempts: 1, policy: policy)
        #expect(pending.cancel() == .cancelled(notifyAgent: false))
        #expect(pending.assign(owner: "c/1", now: at(0)) == .none)

        var running = TaskStateMachine(maxAttempts: 1, policy: policy)
        _ = running.assign(owner: "c/1", now: at(0))
        #expect(running.cancel() == .cancelled(notifyAgent: true))
        #expect(running.result(.failed, attempt: 1, now: at(1)) == .duplicateResult)
        #expect(running.cancel() == .refuse("the task is already cancelled"))
    }
}
