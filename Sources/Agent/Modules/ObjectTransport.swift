import Foundation
import NIOCore
import Shared
import Synchronization

/// The agent's end of module transfer over the coordinator session (protocol v2): sends `objectRequest`s and
/// hands each answering `objectChunk` (or error frame, matched by envelope id) to whoever waits for it.
///
/// ``CoordinatorSession`` attaches it when a session is established and detaches it when the connection ends;
/// a detach fails every outstanding request with `CONNECTION_FAILED`, which ``ModuleFetcher`` takes as "keep
/// the partial file, wait for the next session, resume". How many requests are outstanding is up to the caller
/// (the fetcher keeps a fixed window), so chunks can never pile up faster than they are written.
public final class ObjectTransport: Sendable {
    public typealias Send = @Sendable (Envelope) async throws -> Void

    private enum Slot {
        /// Sent, nobody waits yet.
        case sent
        case waiting(CheckedContinuation<ObjectChunk, any Error>)
        case done(Result<ObjectChunk, MusterError>)
        /// Nobody wants the answer any more; it is dropped when it arrives (an error frame too, so it never
        /// reaches the session's state machine).
        case abandoned
    }

    private struct State {
        var send: Send?
        var version: ProtocolVersion?
        /// Bumped by every attach, so a caller can tell a new session from the old one.
        var generation = 0
        var slots: [String: Slot] = [:]
        var receivedBytes: UInt64 = 0
        var chunks = 0
        var discardedBytes: UInt64 = 0

        mutating func count(_ size: Int) {
            receivedBytes += UInt64(size)
            if size > 0 { chunks += 1 }
        }
    }

    private let state = Mutex(State())

    public init() {}

    // MARK: - Session side

    /// A session is established: requests go out through `send`.
    public func attach(version: ProtocolVersion, send: @escaping Send) {
        state.withLock {
            $0.send = send
            $0.version = version
            $0.generation += 1
        }
    }

    /// The connection ended: every outstanding request fails with `CONNECTION_FAILED`.
    public func detach() {
        let waiters = state.withLock { state -> [CheckedContinuation<ObjectChunk, any Error>] in
            state.send = nil
            state.version = nil
            var waiters: [CheckedContinuation<ObjectChunk, any Error>] = []
            for (id, slot) in state.slots {
                switch slot {
                case .waiting(let continuation):
                    waiters.append(continuation)
                    state.slots[id] = nil
                case .sent:
                    state.slots[id] = .done(.failure(Self.connectionLost))
                case .abandoned:
                    state.slots[id] = nil
                case .done:
                    break
                }
            }
            return waiters
        }
        for waiter in waiters { waiter.resume(throwing: Self.connectionLost) }
    }

    static var connectionLost: MusterError {
        MusterError(.connectionFailed, "the connection to the coordinator ended during a module transfer")
    }

    /// Takes an `objectChunk`, or an error frame answering one of our requests. Returns whether the envelope was
    /// ours (a chunk for a request nobody waits for any more is ours too, and dropped).
    public func received(_ envelope: Envelope) -> Bool {
        let result: Result<ObjectChunk, MusterError>
        switch envelope.type {
        case .objectChunk:
            do {
                guard case .objectChunk(let chunk) = try Message(envelope) else { return true }
                result = .success(chunk)
            } catch let error as MusterError {
                result = .failure(error)
            } catch {
                result = .failure(MusterError(.protocolError, "malformed objectChunk: \(error)"))
            }
        case .error:
            guard state.withLock({ $0.slots[envelope.id] != nil }) else { return false }
            do {
                let body: ErrorMessage = try envelope.decodeBody()
                result = .failure(body.musterError)
            } catch {
                result = .failure(MusterError(.protocolError, "malformed error frame answering an objectRequest"))
            }
        default:
            return false
        }
        let size = (try? result.get().data.readableBytes) ?? 0
        let waiter = state.withLock { state -> CheckedContinuation<ObjectChunk, any Error>? in
            switch state.slots[envelope.id] {
            case .waiting(let continuation):
                state.slots[envelope.id] = nil
                state.count(size)
                return continuation
            case .sent:
                state.slots[envelope.id] = .done(result)
                state.count(size)
                return nil
            case .abandoned, .none:
                // An answer nobody waits for any more (its fetch was cancelled or failed): dropped, not counted.
                state.slots[envelope.id] = nil
                state.discardedBytes += UInt64(size)
                return nil
            case .done:
                // A second answer to one request: keep the first.
                state.discardedBytes += UInt64(size)
                return nil
            }
        }
        waiter?.resume(with: result.mapError { $0 as any Error })
        return true
    }

    // MARK: - Fetcher side

    /// Chunk payload bytes received for requests someone waited for, since this transport was made.
    public var receivedBytes: UInt64 { state.withLock { $0.receivedBytes } }
    /// Chunk payload bytes that arrived for abandoned requests (a cancelled or failed fetch) and were dropped.
    public var discardedBytes: UInt64 { state.withLock { $0.discardedBytes } }
    /// Chunks received since this transport was made.
    public var receivedChunks: Int { state.withLock { $0.chunks } }

    /// The current session's generation, or `nil` while no session that can transfer is attached.
    public var generation: Int? {
        state.withLock { state in
            guard state.send != nil, let version = state.version, version >= .v2 else { return nil }
            return state.generation
        }
    }

    /// The protocol version of the attached session, or `nil` while none is attached (v3 serves deltas).
    public var sessionVersion: ProtocolVersion? {
        state.withLock { $0.send == nil ? nil : $0.version }
    }

    /// Waits until a session that speaks protocol v2 is attached — one newer than `previous`, when given (after a
    /// lost connection the old session may not have been detached yet).
    ///
    /// - Returns: The session's generation.
    /// - Throws: `MusterError` `.timeout` after `limit`, `.protocolVersion` when the session speaks only v1 (the
    ///   coordinator is too old to transfer modules).
    @discardableResult
    public func waitForSession(limit: Duration, newerThan previous: Int? = nil) async throws -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while true {
            let (attached, version, generation) = state.withLock { ($0.send != nil, $0.version, $0.generation) }
            if attached, let version, generation > (previous ?? Int.min) {
                guard version >= .v2 else {
                    throw MusterError(
                        .protocolVersion,
                        "the coordinator speaks protocol \(version); module transfer needs \(ProtocolVersion.v2)",
                        hint: "upgrade the coordinator")
                }
                return generation
            }
            guard clock.now < deadline else {
                throw MusterError(
                    .timeout, "no session with the coordinator for \(limit); the transfer cannot continue",
                    hint: "the task is retried; check the agent's connection to the coordinator")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Sends a request and returns its id (pass it to ``response(to:)``).
    ///
    /// - Throws: `MusterError` `.connectionFailed` when no session is attached or the write fails.
    public func send(_ request: ObjectRequest) async throws -> String {
        let id = Envelope.makeID()
        let envelope = try Message.objectRequest(request).envelope(id: id)
        let send = state.withLock { state -> Send? in
            guard let send = state.send, (state.version ?? .v1) >= .v2 else { return nil }
            state.slots[id] = .sent
            return send
        }
        guard let send else { throw Self.connectionLost }
        do {
            try await send(envelope)
        } catch {
            state.withLock { _ = $0.slots.removeValue(forKey: id) }
            throw Self.connectionLost
        }
        return id
    }

    /// Waits for the answer to a request sent with ``send(_:)``.
    ///
    /// - Throws: The coordinator's error (e.g. `NOT_FOUND`), `CONNECTION_FAILED` when the session ended,
    ///   `CancellationError`.
    public func response(to id: String) async throws -> ObjectChunk {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ObjectChunk, any Error>) in
                let ready = state.withLock { state -> Result<ObjectChunk, MusterError>? in
                    switch state.slots[id] {
                    case .done(let result):
                        state.slots[id] = nil
                        return result
                    case .sent:
                        if Task.isCancelled {
                            state.slots[id] = nil
                            return .failure(MusterError(.cancelled, "the transfer was cancelled"))
                        }
                        state.slots[id] = .waiting(continuation)
                        return nil
                    case .waiting, .abandoned, .none:
                        return .failure(MusterError(.internal, "no outstanding object request \(id)"))
                    }
                }
                if let ready { continuation.resume(with: ready.mapError { $0 as any Error }) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<ObjectChunk, any Error>? in
                guard case .waiting(let continuation) = state.slots[id] else { return nil }
                state.slots[id] = .abandoned
                return continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Forgets a request whose answer is no longer wanted (its chunk is dropped when it arrives).
    public func abandon(_ id: String) {
        let waiter = state.withLock { state -> CheckedContinuation<ObjectChunk, any Error>? in
            switch state.slots[id] {
            case .waiting(let continuation):
                state.slots[id] = .abandoned
                return continuation
            case .sent:
                state.slots[id] = .abandoned
                return nil
            case .done, .abandoned, .none:
                state.slots[id] = nil
                return nil
            }
        }
        waiter?.resume(throwing: CancellationError())
    }
}
