import Crypto
import Foundation
import NIOHTTP1
import PostgresNIO
import Shared
import TestSupport
import Testing

@testable import Coordinator

@Suite("Admin API over real TLS (whole coordinator in process, real PostgreSQL)")
struct AdminAPITests {
    static func code(_ error: any Error) -> MusterError.Code? { (error as? MusterError)?.code }

    @Test func tokensNodesHealthAndAuthentication() async throws {
        let (name, url) = try PostgresHarness.makeDatabase(prefix: "admin")
        defer { PostgresHarness.dropDatabase(name) }
        try await TestCoordinator.with(databaseURL: url) { ready, state in
            // serve wrote admin.json with the bound ports; the CLI's client reads it.
            let config = try AdminClientConfiguration.locate(stateDirectory: state, environment: [:])
            #expect(config == ready.client)
            let client = AdminClient(configuration: config)

            // Tokens: create prints a join command with the advertise address, the agent port and the CA pin.
            let created = try await client.send(
                .POST, "/v1/tokens", body: CreateTokenRequest(ttlSeconds: 3600, uses: 2, labels: ["rack": "r1"]),
                as: CreatedToken.self)
            #expect(created.joinCommand == "muster-agent join --coordinator 127.0.0.1:\(ready.agentPort) --token \(created.token)")
            let token = try JoinToken(parsing: created.token)
            let authority = try CertificateAuthority.loadOrCreate(
                directory: "\(state)/pki", serverNames: [], serverAddresses: [], logger: TestDatabase.logger)
            #expect(token.caPin == authority.caPin)
            let listed = try await client.send(.GET, "/v1/tokens", as: [TokenView].self)
            #expect(listed.map(\.id) == [created.id])
            #expect(listed.first?.status == .active)
            await #expect { _ = try await client.send(.POST, "/v1/tokens", body: ["ttlSeconds": -1], as: CreatedToken.self) } throws: {
                Self.code($0) == .invalidInput
            }

            // Nodes: one joins through the store (as the listener would), then list / show / forget.
            let database = Database(configuration: try Database.Configuration(url: url), queryTimeout: .seconds(60), logger: TestDatabase.logger)
            let node1 = try await withThrowingTaskGroup(of: NodeRecord?.self) { group in
                group.addTask { await database.client.run(); return nil }
                defer { group.cancelAll() }
                let store = NodeStore(database: database, heartbeats: HeartbeatBatcher(), logger: TestDatabase.logger)
                let node = try await store.redeemJoinToken(
                    tokenID: token.id, secret: token.secret, facts: TestDatabase.facts("web-1"), now: Date())
                try await store.sessionOpened(nodeID: node.id, at: Date(), address: "10.77.0.11")
                return node
            }
            let nodes = try await client.send(.GET, "/v1/nodes", as: [NodeView].self)
            #expect(nodes.map(\.id) == [node1.id])
            #expect(nodes.first?.state == .ready)
            #expect(nodes.first?.address == "10.77.0.11")
            #expect(nodes.first?.labels == ["rack": "r1"])
            let shown = try await client.send(.GET, "/v1/nodes/\(node1.id.uuidString.lowercased())", as: NodeView.self)
            #expect(shown.facts.hostname == "web-1")
            await #expect { _ = try await client.send(.GET, "/v1/nodes/\(UUID())", as: NodeView.self) } throws: {
                Self.code($0) == .notFound
            }
            await #expect { _ = try await client.send(.GET, "/v1/nodes/not-a-uuid", as: NodeView.self) } throws: {
                Self.code($0) == .invalidInput
            }
            let forgotten = try await client.send(.DELETE, "/v1/nodes/\(node1.id)", as: NodeView.self)
            #expect(forgotten.state == .forgotten)
            #expect(try await client.send(.GET, "/v1/nodes", as: [NodeView].self).isEmpty)
            #expect(try await client.send(.GET, "/v1/nodes?all=true", as: [NodeView].self).count == 1)
            await #expect { _ = try await client.send(.DELETE, "/v1/nodes/\(node1.id)", as: NodeView.self) } throws: {
                Self.code($0) == .conflict
            }

            // Revoke, twice.
            let revoked = try await client.send(.DELETE, "/v1/tokens/\(created.id)", as: TokenView.self)
            #expect(revoked.status == .revoked)
            await #expect { _ = try await client.send(.DELETE, "/v1/tokens/\(created.id)", as: TokenView.self) } throws: {
                Self.code($0) == .conflict
            }

            // Every admin action is in the audit log, with the admin certificate as actor.
            let audit = try TestDatabase.psql(name, "SELECT actor || ' ' || action FROM audit_log ORDER BY id")
            #expect(audit.split(separator: "\n") == [
                "muster-admin token.create", "muster-admin node.forget", "muster-admin token.revoke",
            ])

            // Health needs no certificate; /v1 does.
            var anonymous = client
            anonymous.presentsClientCertificate = false
            let health = try await anonymous.send(.GET, "/health", as: CoordinatorHealth.self)
            #expect(health.status == "ok")
            let deep = try await anonymous.send(.GET, "/health/deep", as: CoordinatorHealth.self)
            #expect(deep.database?.schemaVersion == SchemaMigrations.latestVersion)
            #expect(deep.agentSessions == 0)
            await #expect { _ = try await anonymous.send(.GET, "/v1/nodes", as: [NodeView].self) } throws: {
                Self.code($0) == .unauthorized
            }

            // A node certificate of the same CA is not the admin certificate.
            let key = P256.Signing.PrivateKey()
            let issued = try authority.signNodeCSR(
                try MusterPKI.makeCSR(key: key, commonName: UUID().uuidString), nodeID: UUID(), validity: .seconds(3600))
            try issued.certificatePEM.write(toFile: "\(state)/node.crt", atomically: true, encoding: .utf8)
            try key.pemRepresentation.write(toFile: "\(state)/node.key", atomically: true, encoding: .utf8)
            var nodeConfig = config
            nodeConfig.certFile = "\(state)/node.crt"
            nodeConfig.keyFile = "\(state)/node.key"
            await #expect {
                _ = try await AdminClient(configuration: nodeConfig).send(.GET, "/v1/nodes", as: [NodeView].self)
            } throws: { Self.code($0) == .forbidden }
        }
    }

    @Test func unreachableDatabaseAtBootIsAClearErrorWithExitCode2() async throws {
        let state = try TestCoordinator.temporaryDirectory("muster-boot")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let port = try PostgresHarness.freePort()
        var configuration = TestCoordinator.configuration(
            stateDirectory: state, databaseURL: "postgres://muster@127.0.0.1:\(port)/muster?sslmode=disable")
        configuration.databaseBootTimeout = .seconds(2)
        await #expect {
            try await CoordinatorServices.run(configuration: configuration, logger: TestDatabase.logger, signals: [])
        } throws: { error in
            guard let error = error as? MusterError else { return false }
            return error.code == .databaseUnavailable && error.code.exitCode == 2
                && error.message.contains("127.0.0.1:\(port)") && error.message.contains("within")
        }
        #expect(!FileManager.default.fileExists(atPath: "\(state)/admin.json"))
    }
}
