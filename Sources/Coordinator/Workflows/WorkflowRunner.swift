import Foundation
import Logging
import ServiceLifecycle
import Shared
import Synchronization

/// Drives every active workflow (DESIGN §4): when a step's task finishes it records the outcome and creates the
/// next step's task. Stateless between ticks — everything is in the `workflows` and `tasks` tables — so a
/// restarted coordinator simply carries on, and several coordinators on one database share the work
/// (``WorkflowStore/advance(id:now:)`` skips rows another one holds).
///
/// It looks at the active workflows every ``Configuration/pollInterval`` and at once when ``wake()`` is called
/// (the task dispatcher calls it whenever an agent reports a result).
public final class WorkflowRunner: Service {
    public struct Configuration: Sendable {
        public var pollInterval: Duration
        public init(pollInterval: Duration = .milliseconds(500)) {
            self.pollInterval = pollInterval
        }
    }

    public let store: WorkflowStore
    let dispatch: @Sendable (UUID) async -> Void
    let configuration: Configuration
    let logger: Logger
    let now: @Sendable () -> Date
    private let woken = Atomic<Bool>(false)

    public init(
        store: WorkflowStore, configuration: Configuration = Configuration(),
        dispatch: @escaping @Sendable (UUID) async -> Void, now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger
    ) {
        self.store = store
        self.configuration = configuration
        self.dispatch = dispatch
        self.now = now
        self.logger = logger
    }

    /// Asks for a pass soon (within ~20 ms) instead of at the next poll.
    public func wake() {
        woken.store(true, ordering: .releasing)
    }

    public func run() async throws {
        let step = Duration.milliseconds(20)
        var sincePass = Duration.zero
        for await _ in AsyncTimerSequence.repeating(every: step).cancelOnGracefulShutdown() {
            sincePass += step
            let wokenNow = woken.exchange(false, ordering: .acquiringAndReleasing)
            guard wokenNow || sincePass >= configuration.pollInterval else { continue }
            sincePass = .zero
            await pass()
        }
    }

    /// Advances every active workflow once (repeatedly while steps finish at once, e.g. a step whose task
    /// another pass already completed). Errors are logged; the next pass tries again.
    public func pass() async {
        let ids: [UUID]
        do {
            ids = try await store.active()
        } catch {
            logger.debug("workflow pass skipped", metadata: ["error": "\(error)"])
            return
        }
        for id in ids {
            do {
                if let node = try await store.advance(id: id, now: now()) {
                    await dispatch(node)
                }
            } catch {
                logger.warning("cannot advance a workflow", metadata: ["workflow": "\(id)", "error": "\(error)"])
            }
        }
    }
}
