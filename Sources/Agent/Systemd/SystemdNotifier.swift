import Logging
import ServiceLifecycle

/// Tells systemd about `muster-agent run` (`units/muster-agent.service` is `Type=notify`): `READY=1` with a status
/// line once the daemon's services are up, `WATCHDOG=1` at half of `WatchdogSec=` (``WatchdogService``) while it
/// runs, `STOPPING=1` on graceful shutdown. Outside systemd (no `NOTIFY_SOCKET`) every send is a no-op.
///
/// Ready does not wait for the coordinator: an agent keeps its node's workloads running while the coordinator is
/// away, so it is "up" once its identity is loaded and its task runner runs (DESIGN §3).
struct SystemdNotifier: Service {
    let logger: Logger
    let status: String

    func run() async throws {
        do {
            if try SDNotify.send(.ready, .status(status)) {
                logger.info("notified systemd: ready")
            }
        } catch {
            logger.warning("cannot notify systemd", metadata: ["error": "\(error)"])
        }
        try await WatchdogService(logger: logger).run()
        // Without a watchdog that returns at once; a service that ends would stop the group, so wait for shutdown.
        try? await gracefulShutdown()
        _ = try? SDNotify.send(.stopping, .status("stopping"))
    }
}
