import Foundation
import Logging
import ServiceLifecycle

/// The `Service` that writes queued heartbeats (``HeartbeatBatcher``) every ``interval`` and once more on
/// graceful shutdown. A failed flush is logged (once per outage) and retried on the next tick; the rows stay
/// queued.
public struct HeartbeatFlusher: Service {
    let batcher: HeartbeatBatcher
    let database: Database
    let interval: Duration
    let logger: Logger

    public init(batcher: HeartbeatBatcher, database: Database, interval: Duration, logger: Logger) {
        self.batcher = batcher
        self.database = database
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        var failing = false
        // The timer loop ends on graceful shutdown; the final flush below then writes what is left.
        for await _ in AsyncTimerSequence.repeating(every: interval).cancelOnGracefulShutdown() {
            do {
                try await batcher.flush(to: database, logger: logger)
                if failing {
                    logger.info("heartbeats are written again")
                    failing = false
                }
            } catch {
                if !failing {
                    logger.warning(
                        "cannot write heartbeats; keeping them queued",
                        metadata: ["error": "\(error)", "pending": "\(batcher.statistics.pending)"])
                }
                failing = true
            }
        }
        do {
            try await batcher.flush(to: database, logger: logger)
        } catch {
            logger.warning("final heartbeat flush failed", metadata: ["error": "\(error)"])
        }
    }
}

/// A tick every `interval`, without unstructured tasks.
struct AsyncTimerSequence: AsyncSequence, Sendable {
    typealias Element = Void
    let interval: Duration

    static func repeating(every interval: Duration) -> AsyncTimerSequence { .init(interval: interval) }

    struct AsyncIterator: AsyncIteratorProtocol {
        let interval: Duration
        mutating func next() async -> Void? {
            do {
                try await Task.sleep(for: interval)
                return ()
            } catch {
                return nil
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(interval: interval) }
}
