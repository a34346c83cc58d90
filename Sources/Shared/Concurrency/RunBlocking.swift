import Dispatch

/// Runs blocking work (file-system walks, copies, hashing, journal reads) on a Dispatch thread instead of the
/// cooperative pool, whose few threads must stay free for the event-driven work (STYLE.md convention 4).
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: body()) }
    }
}

/// ``runBlocking(_:)`` for work that throws; the error reaches the caller.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}
