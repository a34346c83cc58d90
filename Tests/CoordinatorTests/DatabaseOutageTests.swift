import Foundation
import NIOHTTP1
import Shared
import TestSupport
import Testing

@testable import Coordinator

@Suite("Database lost while running (dedicated throwaway cluster)")
struct DatabaseOutageTests {
    @Test func apiAnswers503AndHealthIsDegradedThenRecoversWithoutRestart() async throws {
        let cluster = try ThrowawayCluster()
        defer { cluster.destroy() }
        try await TestCoordinator.with(databaseURL: cluster.url) { ready, _ in
            let client = AdminClient(configuration: ready.client)
            let created = try await client.send(
                .POST, "/v1/tokens", body: CreateTokenRequest(ttlSeconds: 60, uses: nil, labels: [:]),
                as: CreatedToken.self)

            try cluster.stop()

            // /v1: 503, Retry-After, DATABASE_UNAVAILABLE, within the store's bounded wait.
            let response = try await client.raw(.GET, "/v1/tokens")
            #expect(response.status == 503)
            #expect(response.headers.contains { $0.0.lowercased() == "retry-after" })
            let body = try MusterJSON.decoder().decode(AdminErrorBody.self, from: response.body)
            #expect(body.code == "DATABASE_UNAVAILABLE")
            // /health stays 200 but says degraded; /health/deep is 503 with the reason.
            let health = try await client.send(.GET, "/health", as: CoordinatorHealth.self)
            #expect(health.status == "degraded")
            #expect(health.degraded.contains { $0.component == "database" })
            let deep = try await client.raw(.GET, "/health/deep")
            #expect(deep.status == 503)

            try cluster.start()

            // The pool reconnects by itself: no coordinator restart.
            let recovered = try await TestCoordinator.eventually(timeout: .seconds(90)) {
                let tokens = try await client.send(.GET, "/v1/tokens", as: [TokenView].self)
                return tokens.map(\.id) == [created.id]
            }
            #expect(recovered)
            let healthAfter = try await client.send(.GET, "/health/deep", as: CoordinatorHealth.self)
            #expect(healthAfter.status == "ok")
        }
    }
}
