import Logging
import ServiceLifecycle

/// Pings the systemd watchdog (`WATCHDOG=1`) at half of `WatchdogSec=` while the agent is healthy.
///
/// When no watchdog is configured (`WATCHDOG_USEC` unset, or meant for another PID) `run()` returns at once. The
/// loop ends on graceful shutdown or cancellation. `isHealthy` lets the agent withhold pings when a critical part
/// is stuck, so systemd restarts it (`Restart=on-watchdog`/`always`).
struct WatchdogService: Service {
    let logger: Logger
    /// `nil` reads `WATCHDOG_USEC` at `run()`; tests pass an interval.
    let interval: Duration?
    let isHealthy: @Sendable () async -> Bool
    let ping: @Sendable () throws -> Void

    init(
        logger: Logger, interval: Duration? = nil, isHealthy: @escaping @Sendable () async -> Bool = { true },
        ping: @escaping @Sendable () throws -> Void = { _ = try SDNotify.send(.watchdog) }
    ) {
        self.logger = logger
        self.interval = interval
        self.isHealthy = isHealthy
        self.ping = ping
    }

    func run() async throws {
        guard let watchdog = try interval ?? SDNotify.watchdogInterval() else {
            logger.debug("no systemd watchdog configured")
            return
        }
        let period = watchdog / 2
        logger.info("pinging the systemd watchdog", metadata: ["period": "\(period)"])
        let logger = self.logger
        let isHealthy = self.isHealthy
        let ping = self.ping
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                if await isHealthy() {
                    do { try ping() } catch { logger.warning("watchdog ping failed: \(error)") }
                } else {
                    logger.warning("withholding the watchdog ping: the agent is not healthy")
                }
                do { try await Task.sleep(for: period) } catch { return }
            }
        }
    }
}
