import Foundation

/// A real `muster serve` process started from the built binary.
///
/// Uses an external PostgreSQL (`--database-url`), listens for agents on `listenHost` with an ephemeral port and
/// for admins on 127.0.0.1 with an ephemeral port, and uses short heartbeat settings so tests see state changes
/// quickly. Readiness is `<state-dir>/admin.json`, which `muster serve` deletes at start and writes once the
/// database is migrated and both listeners are bound.
final class CoordinatorProcess: Sendable {
    struct Timings: Sendable {
        var heartbeatInterval = "1s"
        var heartbeatGrace = "2s"
        var failoverGrace = "0s"
    }

    struct AdminInfo: Sendable {
        /// The agent listener's bound address (HOST:PORT).
        var agentAddress: String
        var adminAddress: String
    }

    let stateDir: String
    let databaseURL: String?
    let listenHost: String
    let timings: Timings
    let process: ChildProcess
    let info: AdminInfo

    private init(
        stateDir: String, databaseURL: String?, listenHost: String, timings: Timings, process: ChildProcess,
        info: AdminInfo
    ) {
        self.stateDir = stateDir
        self.databaseURL = databaseURL
        self.listenHost = listenHost
        self.timings = timings
        self.process = process
        self.info = info
    }

    /// Starts `muster serve` and waits until it is ready.
    /// - Parameter agentPort: 0 for an ephemeral port; a restart passes the previous port so agents find it again.
    static func start(
        stateDir: String, databaseURL: String?, listenHost: String, agentPort: Int = 0,
        timings: Timings = Timings(), extraArguments: [String] = []
    ) async throws -> CoordinatorProcess {
        try Binaries.check()
        var args = [
            "serve", "--state-dir", stateDir,
            "--listen", "\(listenHost):\(agentPort)", "--admin-listen", "127.0.0.1:0",
            "--advertise", listenHost,
            "--heartbeat-interval", timings.heartbeatInterval, "--heartbeat-grace", timings.heartbeatGrace,
            "--failover-grace", timings.failoverGrace,
        ]
        if let databaseURL { args += ["--database-url", databaseURL] }
        args += extraArguments
        let process = try ChildProcess.spawn(
            name: "coordinator", path: Binaries.muster, arguments: args,
            environment: ["MUSTER_LOG_LEVEL": "debug"], logPath: "\(stateDir)/../coordinator.log")
        do {
            let info = try await waitForAdminFile(stateDir: stateDir, process: process)
            return CoordinatorProcess(
                stateDir: stateDir, databaseURL: databaseURL, listenHost: listenHost, timings: timings,
                process: process, info: info)
        } catch {
            process.killAndReap()
            throw error
        }
    }

    private static func waitForAdminFile(stateDir: String, process: ChildProcess) async throws -> AdminInfo {
        try await eventually("coordinator readiness (\(stateDir)/admin.json)", timeout: .seconds(90)) {
            if let code = process.exitCode {
                throw HarnessError("muster serve exited with \(code) before it was ready:\n\(process.logTail())")
            }
            guard let data = FileManager.default.contents(atPath: "\(stateDir)/admin.json"),
                let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let agent = obj["agentAddress"] as? String, let admin = obj["adminAddress"] as? String
            else { return nil }
            return AdminInfo(agentAddress: agent, adminAddress: admin)
        }
    }

    /// The agent listener's port.
    var agentPort: Int { Int(info.agentAddress.split(separator: ":").last ?? "") ?? 0 }

    /// What agents pass to `--coordinator`.
    var coordinatorAddress: String { "\(listenHost):\(agentPort)" }

    /// Runs the admin CLI against this coordinator.
    func cli(_ args: [String]) async throws -> CommandResult {
        try await runCommand(Binaries.muster, args + ["--state-dir", stateDir])
    }

    /// `muster token create --quiet`, returning the token.
    func createToken(extra: [String] = []) async throws -> String {
        let r = try await cli(["token", "create", "--quiet"] + extra)
        guard r.status == 0 else { throw HarnessError("muster token create failed (\(r.status)): \(r.stderr)") }
        let token = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty, !token.contains(" ") else { throw HarnessError("unexpected token output: \(r.stdout)") }
        return token
    }

    /// `muster nodes --json`, decoded.
    func nodes() async throws -> [NodeJSON] {
        let r = try await cli(["nodes", "--json"])
        guard r.status == 0 else { throw HarnessError("muster nodes --json failed (\(r.status)): \(r.stderr)") }
        return try NodeJSON.decodeList(r.stdout)
    }

    /// Waits until `muster nodes` shows `id` in `state`.
    @discardableResult
    func waitForNode(_ id: String, state: String, timeout: Duration = .seconds(60)) async throws -> NodeJSON {
        try await eventually("node \(id) to be \(state)", timeout: timeout) {
            try await self.nodes().first { $0.id.lowercased() == id.lowercased() && $0.state == state }
        }
    }

    /// SIGTERM and wait (graceful shutdown); returns the exit code.
    @discardableResult
    func stop() async -> Int32? { await process.stop() }
}

/// One entry of `muster nodes --json`, read loosely so that extra fields do not matter.
struct NodeJSON: Sendable {
    var id: String
    var state: String
    var hostname: String?
    /// The agent's address as the coordinator saw it.
    var address: String?
    var lastSeen: Date?
    var facts: [String: String]
    var raw: String

    static func decodeList(_ text: String) throws -> [NodeJSON] {
        guard let data = text.data(using: .utf8),
            let array = try JSONSerialization.jsonObject(with: data) as? [[String: Any]]
        else { throw HarnessError("muster nodes --json did not print a JSON array: \(text.prefix(500))") }
        return try array.map { obj in
            guard let id = obj["id"] as? String, let state = obj["state"] as? String else {
                throw HarnessError("node entry without id/state: \(obj)")
            }
            var facts: [String: String] = [:]
            for (k, v) in (obj["facts"] as? [String: Any]) ?? [:] { facts[k] = "\(v)" }
            let raw =
                (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]))
                .map { String(decoding: $0, as: UTF8.self) } ?? ""
            return NodeJSON(
                id: id, state: state, hostname: (obj["hostname"] as? String) ?? facts["hostname"],
                address: (obj["address"] as? String).map(hostPart),
                lastSeen: (obj["lastSeen"] as? String).flatMap(parseDate), facts: facts, raw: raw)
        }
    }
}

/// `10.77.0.12`, `10.77.0.12:51234` or `[::1]:5` → the host part.
private func hostPart(_ address: String) -> String {
    if address.hasPrefix("["), let end = address.firstIndex(of: "]") {
        return String(address[address.index(after: address.startIndex)..<end])
    }
    let parts = address.split(separator: ":")
    return parts.count == 2 ? String(parts[0]) : address
}

/// ISO-8601 with or without fractional seconds.
private func parseDate(_ text: String) -> Date? {
    let plain = ISO8601DateFormatter()
    let fractional = ISO8601DateFormatter()
    fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return fractional.date(from: text) ?? plain.date(from: text)
}
