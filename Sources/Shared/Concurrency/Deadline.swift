import Synchronization

/// Runs `body` and returns its result, or throws `onTimeout()` once `timeout` has passed — whichever comes first.
///
/// Unlike racing `body` against a sleep in a task group, the caller is released at the deadline even when `body`
/// does not react to cancellation (a task group waits for all its children, so a body stuck in a library call that
/// ignores cancellation would hold the caller forever). `body` runs in its own task, is cancelled at the deadline
/// or when the caller is cancelled, and is left to finish on its own; its late result is dropped.
///
/// - Throws: `body`'s error, `onTimeout()` at the deadline, `CancellationError` when the caller is cancelled first.
public func withDeadline<Result: Sendable>(
    _ timeout: Duration, onTimeout: @escaping @Sendable () -> any Error,
    _ body: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    let race = DeadlineRace<Result>()
    let work = Task {
        do {
            race.finish(.success(try await body()))
        } catch {
            race.finish(.failure(error))
        }
    }
    let timer = Task {
        try? await Task.sleep(for: timeout)
        if !Task.isCancelled { race.finish(.failure(onTimeout())) }
    }
    defer {
        timer.cancel()
        work.cancel()
    }
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
            race.wait(continuation)
        }
    } onCancel: {
        race.finish(.failure(CancellationError()))
    }
}

/// The first outcome wins; whoever comes later is ignored. The continuation may be installed before or after the
/// outcome is known.
private final class DeadlineRace<Value: Sendable>: Sendable {
    private enum State {
        case idle
        case waiting(CheckedContinuation<Value, any Error>)
        case finished(Result<Value, any Error>)
        case delivered
    }

    private let state = Mutex<State>(.idle)

    func wait(_ continuation: CheckedContinuation<Value, any Error>) {
        let ready: Result<Value, any Error>? = state.withLock { state in
            switch state {
            case .idle:
                state = .waiting(continuation)
                return nil
            case .finished(let result):
                state = .delivered
                return result
            case .waiting, .delivered:
                preconditionFailure("DeadlineRace awaited twice")
            }
        }
        if let ready { continuation.resume(with: ready) }
    }

    func finish(_ result: Result<Value, any Error>) {
        let waiting: CheckedContinuation<Value, any Error>? = state.withLock { state in
            switch state {
            case .idle:
                state = .finished(result)
                return nil
            case .waiting(let continuation):
                state = .delivered
                return continuation
            case .finished, .delivered:
                return nil
            }
        }
        waiting?.resume(with: result)
    }
}
