import Logging
import Synchronization
import Testing

@testable import Agent

@Suite("sd_notify and the watchdog")
struct SDNotifyTests {
    @Test("states are preformatted into one newline-separated string")
    func format() {
        #expect(
            SDNotify.format([.ready, .status("attached 2 modules\nok")]) == "READY=1\nSTATUS=attached 2 modules ok")
        #expect(SDNotify.format([.watchdog]) == "WATCHDOG=1")
        #expect(SDNotify.format([.stopping, .mainPID(42)]) == "STOPPING=1\nMAINPID=42")
    }

    @Test("the watchdog service pings until cancelled, and withholds pings while unhealthy")
    func watchdogPings() async throws {
        struct State {
            var pings = 0
            var healthy = true
            /// Ping counts seen each time the service asked and was told "unhealthy".
            var pingsAtUnhealthyChecks: [Int] = []
        }
        let state = Mutex(State())
        let service = WatchdogService(
            logger: Logger(label: "test"), interval: .milliseconds(10),
            isHealthy: {
                state.withLock { s in
                    if !s.healthy { s.pingsAtUnhealthyChecks.append(s.pings) }
                    return s.healthy
                }
            },
            ping: { state.withLock { $0.pings += 1 } })
        let task = Task { try await service.run() }
        while state.withLock({ $0.pings }) < 3 { try await Task.sleep(for: .milliseconds(5)) }
        state.withLock { $0.healthy = false }
        while state.withLock({ $0.pingsAtUnhealthyChecks.count }) < 3 { try await Task.sleep(for: .milliseconds(5)) }
        task.cancel()
        try await task.value
        // The loop is sequential: once told "unhealthy" it never pinged again while unhealthy.
        let checks = state.withLock { $0.pingsAtUnhealthyChecks }
        #expect(Set(checks.prefix(3)).count == 1)
        #expect(state.withLock { $0.pings } == checks[0])
    }
}
