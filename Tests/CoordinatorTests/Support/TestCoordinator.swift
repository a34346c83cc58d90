import Foundation
import Logging
import Shared
import TestSupport

@testable import Coordinator

/// A whole coordinator (`CoordinatorServices.run`) in this process on ports 0, for one test.
enum TestCoordinator {
    static func temporaryDirectory(_ prefix: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func configuration(stateDirectory: String, databaseURL: String?) -> CoordinatorConfiguration {
        var heartbeats = CoordinatorConfiguration.Heartbeats()
        heartbeats.minimumInterval = .seconds(1)
        heartbeats.grace = .seconds(2)
        heartbeats.failoverGrace = .zero
        return CoordinatorConfiguration(
            stateDirectory: stateDirectory, databaseURL: databaseURL, databaseBootTimeout: .seconds(10),
            agentListen: .init(host: "127.0.0.1", port: 0), adminListen: .init(host: "127.0.0.1", port: 0),
            advertise: "127.0.0.1", heartbeats: heartbeats, logLevel: .warning)
    }

    /// Runs a coordinator until `body` returns, then cancels it and removes the state directory.
    static func with<T: Sendable>(
        databaseURL: String, _ body: @Sendable (CoordinatorServices.Ready, String) async throws -> T
    ) async throws -> T {
        let state = try temporaryDirectory("muster-coord")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let configuration = configuration(stateDirectory: state, databaseURL: databaseURL)
        let (stream, continuation) = AsyncStream<CoordinatorServices.Ready>.makeStream()
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { continuation.finish() }
                try await CoordinatorServices.run(
                    configuration: configuration, logger: TestDatabase.logger, signals: [],
                    onReady: { continuation.yield($0) })
            }
            defer { group.cancelAll() }
            var iterator = stream.makeAsyncIterator()
            guard let ready = await iterator.next() else {
                try await group.next()
                throw MusterError(.internal, "the coordinator stopped before it was ready")
            }
            return try await body(ready, state)
        }
    }

    /// Polls `condition` every 200 ms until it holds or `timeout` passes.
    static func eventually(
        timeout: Duration = .seconds(60), _ condition: @Sendable () async throws -> Bool
    ) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if (try? await condition()) == true { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }
}
