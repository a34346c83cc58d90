import Foundation

/// A real `muster-agent` process in a network namespace, with its own state directory.
final class AgentProcess: Sendable {
    let name: String
    let netns: String?
    let stateDir: String
    let process: ChildProcess
    /// What the daemon was started with beyond the defaults; a restart passes them again.
    let environment: [String: String]
    let extraArguments: [String]

    private init(
        name: String, netns: String?, stateDir: String, process: ChildProcess, environment: [String: String],
        extraArguments: [String]
    ) {
        self.name = name
        self.netns = netns
        self.stateDir = stateDir
        self.process = process
        self.environment = environment
        self.extraArguments = extraArguments
    }

    /// `muster-agent join --coordinator ADDR --token T --state-dir DIR --run [EXTRA…]` inside `netns`.
    /// - Parameter extraArguments: more options for the daemon, e.g. `--systemd system --unit-dir D`.
    static func join(
        name: String, netns: String?, coordinator: String, token: String, stateDir: String,
        environment: [String: String] = [:], extraArguments: [String] = []
    ) throws -> AgentProcess {
        try Binaries.check()
        let p = try ChildProcess.spawn(
            name: name, path: Binaries.agent,
            arguments: ["join", "--coordinator", coordinator, "--token", token, "--state-dir", stateDir, "--run"]
                + extraArguments,
            netns: netns, environment: environment.merging(["MUSTER_LOG_LEVEL": "debug"]) { own, _ in own },
            logPath: "\(stateDir).log")
        return AgentProcess(
            name: name, netns: netns, stateDir: stateDir, process: p, environment: environment,
            extraArguments: extraArguments)
    }

    /// `muster-agent run --state-dir DIR [EXTRA…]` inside `netns` (after a join).
    static func run(
        name: String, netns: String?, stateDir: String, environment: [String: String] = [:],
        extraArguments: [String] = []
    ) throws -> AgentProcess {
        try Binaries.check()
        let p = try ChildProcess.spawn(
            name: name, path: Binaries.agent, arguments: ["run", "--state-dir", stateDir] + extraArguments,
            netns: netns, environment: environment.merging(["MUSTER_LOG_LEVEL": "debug"]) { own, _ in own },
            logPath: "\(stateDir).log")
        return AgentProcess(
            name: name, netns: netns, stateDir: stateDir, process: p, environment: environment,
            extraArguments: extraArguments)
    }

    /// The node id the agent wrote at join (`<state-dir>/identity/node-id`), or nil before the join finished.
    var nodeID: String? {
        let path = "\(stateDir)/identity/node-id"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return UUID(uuidString: id) == nil ? nil : id.lowercased()
    }

    /// Starts the same agent again from its state directory (as after a crash).
    func restarted() throws -> AgentProcess {
        try AgentProcess.run(
            name: name, netns: netns, stateDir: stateDir, environment: environment, extraArguments: extraArguments)
    }
}
