import Foundation
import Synchronization
import TestSupport
import Testing

/// End to end with the real binaries: a coordinator on the host and agents as separate hosts in network
/// namespaces, talking mutual TLS over veth, node state in a real PostgreSQL.
///
/// Serialized: each test builds its own namespaces and coordinator, and two at once would only compete for the
/// two cores. Heartbeats are set to 1 s with 2 s grace, so "unreachable" comes a few seconds after a kill; the
/// waits are generous liveness bounds, not timing assertions.
@Suite("cluster end to end", .serialized, .requiresRoot, .requiresNetns)
struct ClusterTests {
    /// Everything one test started; `tearDown()` kills by PID and removes namespaces, databases and directories.
    final class Cluster: Sendable {
        let scratch: ScratchDirectory
        let nodes: NetnsNodes
        let database: (name: String, url: String)
        let processes = ProcessList()

        init(agents: Int) throws {
            try Binaries.check()
            scratch = try ScratchDirectory("cluster")
            do {
                nodes = try NetnsNodes.up(count: agents)
            } catch {
                scratch.remove()
                throw error
            }
            do {
                database = try PostgresHarness.makeDatabase(prefix: "it")
            } catch {
                nodes.down()
                scratch.remove()
                throw error
            }
        }

        func startCoordinator(agentPort: Int = 0) async throws -> CoordinatorProcess {
            let c = try await CoordinatorProcess.start(
                stateDir: try scratch.sub("coordinator"), databaseURL: database.url,
                listenHost: nodes.hostAddress, agentPort: agentPort)
            processes.add(c.process)
            return c
        }

        func join(_ index: Int, coordinator: CoordinatorProcess, token: String) throws -> AgentProcess {
            let a = try AgentProcess.join(
                name: "agent\(index)", netns: nodes.nodes[index].netns, coordinator: coordinator.coordinatorAddress,
                token: token, stateDir: try scratch.sub("agent\(index)"))
            processes.add(a.process)
            return a
        }

        func restart(_ agent: AgentProcess) throws -> AgentProcess {
            let a = try agent.restarted()
            processes.add(a.process)
            return a
        }

        /// Logs of everything, for a failing test's message.
        func logs() -> String {
            processes.all.map { "---- \($0.name) (pid \($0.pid)) ----\n\($0.logTail(3000))" }.joined(separator: "\n")
        }

        func tearDown() {
            processes.killAll()
            nodes.down()
            PostgresHarness.dropDatabase(database.name)
            scratch.remove()
        }
    }

    /// Joins `count` agents and waits until each one's node is `ready`; returns node ids in agent order.
    static func joinAll(
        _ cluster: Cluster, coordinator: CoordinatorProcess, count: Int
    ) async throws -> (agents: [AgentProcess], ids: [String]) {
        let token = try await coordinator.createToken(extra: ["--uses", "\(count)"])
        var agents: [AgentProcess] = []
        for i in 0..<count { agents.append(try cluster.join(i, coordinator: coordinator, token: token)) }
        var ids: [String] = []
        for i in 0..<count {
            let id = try await eventually("agent\(i) to finish its join") { () async throws -> String? in
                if let code = agents[i].process.exitCode {
                    throw HarnessError("agent\(i) exited with \(code):\n\(agents[i].process.logTail())")
                }
                return agents[i].nodeID
            }
            let node = try await coordinator.waitForNode(id, state: "ready")
            // The coordinator saw the session come from the agent's own namespace address.
            #expect(node.address == cluster.nodes.nodes[i].address, "\(node.raw)")
            ids.append(id)
        }
        return (agents, ids)
    }

    @Test("three agents join, heartbeat, turn unreachable when killed and ready when restarted")
    func joinHeartbeatKillRestart() async throws {
        let cluster = try Cluster(agents: 3)
        defer { cluster.tearDown() }
        do {
            let coordinator = try await cluster.startCoordinator()
            let (agents, ids) = try await Self.joinAll(cluster, coordinator: coordinator, count: 3)
            #expect(Set(ids).count == 3, "three distinct node ids")

            // `muster nodes --json` lists them with host facts.
            let listed = try await coordinator.nodes()
            #expect(listed.count == 3)
            for node in listed {
                #expect(node.state == "ready")
                #expect(node.facts["hostname"].map { !$0.isEmpty } == true, "facts.hostname in \(node.raw)")
                #expect(node.facts["kernel"].map { !$0.isEmpty } == true, "facts.kernel in \(node.raw)")
                #expect((Int(node.facts["cpuCount"] ?? "") ?? 0) >= 1, "facts.cpuCount in \(node.raw)")
                #expect((Int(node.facts["memoryBytes"] ?? "") ?? 0) > 0, "facts.memoryBytes in \(node.raw)")
            }

            // Heartbeats are persisted: every node's lastSeen moves forward.
            let before = Dictionary(uniqueKeysWithValues: listed.map { ($0.id, $0.lastSeen) })
            for id in ids {
                try await eventually("a newer heartbeat from \(id)") { () async throws -> Date? in
                    guard let seen = try await coordinator.nodes().first(where: { $0.id == id })?.lastSeen else {
                        return nil
                    }
                    if let old = before[id] ?? nil, seen <= old { return nil }
                    return seen
                }
            }

            // SIGKILL agent 1: no goodbye, the coordinator notices the missing heartbeats.
            agents[1].process.kill(signal: SIGKILL)
            await agents[1].process.waitForExit()
            try await coordinator.waitForNode(ids[1], state: "unreachable")
            // The others stay ready.
            let others = try await coordinator.nodes().filter { $0.id != ids[1] }
            #expect(others.allSatisfy { $0.state == "ready" }, "\(others.map(\.raw))")

            // Restart it from its state directory: same node, ready again.
            let again = try cluster.restart(agents[1])
            try await coordinator.waitForNode(ids[1], state: "ready")
            #expect(again.process.isRunning)
            #expect(try await coordinator.nodes().count == 3, "a restart re-uses the node, it does not join anew")
        } catch {
            Issue.record("\(error)\n\(cluster.logs())")
        }
    }

    @Test("agents reconnect after the coordinator restarts")
    func coordinatorRestart() async throws {
        let cluster = try Cluster(agents: 3)
        defer { cluster.tearDown() }
        do {
            let first = try await cluster.startCoordinator()
            let port = first.agentPort
            let (agents, ids) = try await Self.joinAll(cluster, coordinator: first, count: 3)
            let lastSeen = Dictionary(uniqueKeysWithValues: try await first.nodes().map { ($0.id, $0.lastSeen) })

            let code = await first.stop()
            #expect(code == 0, "graceful shutdown on SIGTERM exits 0:\n\(first.process.logTail())")
            // Agents keep running while the coordinator is away.
            try await Task.sleep(for: .seconds(2))
            #expect(agents.allSatisfy { $0.process.isRunning })

            let second = try await cluster.startCoordinator(agentPort: port)
            for id in ids {
                try await eventually("\(id) to reconnect and heartbeat after the restart", timeout: .seconds(180)) {
                    () async throws -> NodeJSON? in
                    guard let node = try await second.nodes().first(where: { $0.id == id }), node.state == "ready",
                        let seen = node.lastSeen, let old = lastSeen[id] ?? nil, seen > old
                    else { return nil }
                    return node
                }
            }
            #expect(try await second.nodes().count == 3)
        } catch {
            Issue.record("\(error)\n\(cluster.logs())")
        }
    }
}

/// Processes one test started, killed by PID at teardown.
final class ProcessList: Sendable {
    private let list = Mutex<[ChildProcess]>([])
    func add(_ p: ChildProcess) { list.withLock { $0.append(p) } }
    var all: [ChildProcess] { list.withLock { $0 } }
    func killAll() { for p in all { p.killAndReap() } }
}
