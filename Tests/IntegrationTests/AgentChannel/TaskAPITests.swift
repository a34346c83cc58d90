import Foundation
import Logging
import NIOHTTP1
import Shared
import TestSupport
import Testing

@testable import Agent
@testable import Coordinator

/// Tasks through the admin API of a whole coordinator (`CoordinatorServices.run`, as `muster serve` runs it:
/// real PostgreSQL, real TLS on both ports) and a real agent.
@Suite("Tasks through the admin API of a whole coordinator")
struct TaskAPITests {
    @Test func createRunListShowAndRefuseUnknownKinds() async throws {
        let (name, url) = try PostgresHarness.makeDatabase(prefix: "taskapi")
        defer { PostgresHarness.dropDatabase(name) }
        let directory = try ChannelFixture.temporaryDirectory("taskapi")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var heartbeats = CoordinatorConfiguration.Heartbeats()
        heartbeats.minimumInterval = .milliseconds(200)
        heartbeats.failoverGrace = .zero
        let configuration = CoordinatorConfiguration(
            stateDirectory: "\(directory)/coordinator", databaseURL: url, databaseBootTimeout: .seconds(10),
            agentListen: .init(host: "127.0.0.1", port: 0), adminListen: .init(host: "127.0.0.1", port: 0),
            advertise: "127.0.0.1", heartbeats: heartbeats, logLevel: .critical)
        let logger = ChannelFixture.logger
        let (readiness, ready) = AsyncStream<CoordinatorServices.Ready>.makeStream()

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { ready.finish() }
                try await CoordinatorServices.run(
                    configuration: configuration, logger: logger, signals: [], onReady: { ready.yield($0) })
            }
            defer { group.cancelAll() }
            var iterator = readiness.makeAsyncIterator()
            let coordinator = try #require(await iterator.next())
            let client = AdminClient(configuration: coordinator.client)

            // A node joins with a token from the API and runs the agent's task runner and session.
            let created = try await client.send(
                .POST, "/v1/tokens", body: CreateTokenRequest(ttlSeconds: 600, uses: 1, labels: [:]),
                as: CreatedToken.self)
            let stateDirectory = "\(directory)/agent"
            let identity = try await JoinClient(
                coordinator: CoordinatorAddress(host: "127.0.0.1", port: coordinator.agentPort),
                token: try JoinToken(parsing: created.token), stateDirectory: stateDirectory,
                facts: ChannelFixture.facts, logger: logger
            ).join()
            let node = identity.nodeID.uuidString.lowercased()

            // Unknown kinds and nodes are refused before anything is stored.
            let unknownKind = try await client.raw(
                .POST, "/v1/tasks",
                body: try MusterJSON.encoder().encode(CreateTaskRequest(node: node, kind: "launchRockets")))
            #expect(unknownKind.status == 400)
            #expect(AdminClient.error(from: unknownKind).code == .invalidInput)
            #expect(AdminClient.error(from: unknownKind).message.contains("launchRockets"))
            await #expect {
                _ = try await client.send(
                    .POST, "/v1/tasks", body: CreateTaskRequest(node: UUID().uuidString, kind: "checkHealth"),
                    as: TaskRecord.self)
            } throws: { ($0 as? MusterError)?.code == .notFound }
            #expect(try await client.send(.GET, "/v1/tasks", as: [TaskRecord].self).isEmpty)

            let runner = try AgentServices.makeTaskRunner(
                configuration: AgentConfiguration(stateDirectory: stateDirectory), logger: logger)
            let session = CoordinatorSession(
                configuration: .init(stateDirectory: stateDirectory), tasks: runner, logger: logger)
            group.addTask { try await runner.run() }
            group.addTask { try await session.run() }
            try await ChannelFixture.eventually("the agent's session is established") { session.status.connected }

            let task = try await client.send(
                .POST, "/v1/tasks",
                body: CreateTaskRequest(
                    node: node, kind: "checkHealth", spec: .object(["paths": .array([.string(stateDirectory)])])),
                as: TaskRecord.self)
            #expect(task.kind == TaskKind.checkHealth.rawValue)
            #expect(task.maxAttempts == TaskStore.defaultMaxAttempts)
            let path = "/v1/tasks/\(task.id.uuidString.lowercased())"
            try await ChannelFixture.eventually("the task finished") {
                try await client.send(.GET, path, as: TaskRecord.self).state.isFinal
            }
            let done = try await client.send(.GET, path, as: TaskRecord.self)
            #expect(done.state == .succeeded)
            #expect(try done.result?.decode(CheckHealth.Report.self).healthy == true)
            let listed = try await client.send(
                .GET, "/v1/tasks?node=\(node)&state=succeeded", as: [TaskRecord].self)
            #expect(listed.map(\.id) == [task.id])
            await #expect { _ = try await client.send(.GET, "/v1/tasks?state=lost", as: [TaskRecord].self) } throws: {
                ($0 as? MusterError)?.code == .invalidInput
            }
        }
    }
}
