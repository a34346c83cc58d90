import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `units/muster-agent.service` is `Type=notify` with a watchdog: the real `muster-agent` binary must send
/// `READY=1`, keep sending `WATCHDOG=1` and say `STOPPING=1` on SIGTERM — here to a notify socket of our own, the
/// way systemd's manager receives them.
@Suite("muster-agent speaks sd_notify", .serialized)
struct SystemdNotifyTests {
    @Test func readyThenWatchdogPingsThenStopping() async throws {
        try Binaries.check()
        let scratch = try ScratchDirectory("notify")
        let database = try PostgresHarness.makeDatabase(prefix: "notify")
        let processes = ProcessList()
        defer {
            processes.killAll()
            PostgresHarness.dropDatabase(database.name)
            scratch.remove()
        }
        let socket = try NotifySocket(path: "\(scratch.path)/notify.sock")
        defer { socket.close() }
        let coordinator = try await CoordinatorProcess.start(
            stateDir: try scratch.sub("coordinator"), databaseURL: database.url, listenHost: "127.0.0.1")
        processes.add(coordinator.process)
        let token = try await coordinator.createToken()
        // WATCHDOG_USEC without WATCHDOG_PID applies to the process that reads it (sd_watchdog_enabled(3)).
        let agent = try AgentProcess.join(
            name: "agent", netns: nil, coordinator: coordinator.coordinatorAddress, token: token,
            stateDir: try scratch.sub("agent"),
            environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "1000000"])
        processes.add(agent.process)

        var received: [String] = []
        func receive(until expected: String) async throws {
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                if let datagram = socket.receive() {
                    received.append(datagram)
                    if datagram.split(separator: "\n").contains(Substring(expected)) { return }
                } else {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            Issue.record("no \(expected) within 60 s; received \(received)\n\(agent.process.logTail())")
            throw HarnessError("no \(expected)")
        }
        try await receive(until: "READY=1")
        #expect(received.last?.contains("STATUS=agent for ") == true, "\(received)")
        try await receive(until: "WATCHDOG=1")
        try await receive(until: "WATCHDOG=1")
        agent.process.kill(signal: SIGTERM)
        try await receive(until: "STOPPING=1")
        #expect(await agent.process.waitForExit() == 0)
    }
}

/// A unix datagram socket bound to a path, read without blocking.
final class NotifySocket: Sendable {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(
            AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw HarnessError("path too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else {
            Glibc.close(fd)
            throw HarnessError("bind \(path): errno \(errno)")
        }
    }

    /// One datagram, or nil when none is waiting.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }

    func close() {
        Glibc.close(fd)
        unlink(path)
    }
}
