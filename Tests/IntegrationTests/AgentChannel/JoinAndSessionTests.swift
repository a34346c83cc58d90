import Foundation
import Logging
import Shared
import Testing
import X509

@testable import Agent
@testable import Coordinator

/// The agent channel end to end in one process: real TLS with certificates from our CA, the real listener,
/// the real agent session, the real PostgreSQL store.
@Suite("Agent channel: join, session, heartbeats, renewal (real TLS + PostgreSQL)")
struct JoinAndSessionTests {
    @Test func joinHeartbeatRenewAndReconnect() async throws {
        // Node certificates live 6 s, so the agent renews at 2/3 of that within the test (and the renewed one
        // is still valid when the agent reconnects on a loaded machine).
        try await ChannelFixture.with(configure: { $0.nodeCertificateValidity = .seconds(6) }) { fx in
            let token = try await fx.token(uses: 1)
            let (identity, stateDirectory) = try await fx.join(token)

            // Identity on disk: key 0600, node id, CA = the cluster's.
            let paths = NodeIdentity.Paths(stateDirectory: stateDirectory)
            #expect(SecureFile.mode(of: paths.key) == 0o600)
            #expect(
                try SecureFile.read(paths.nodeID).trimmingCharacters(in: .whitespacesAndNewlines)
                    == identity.nodeID.uuidString.lowercased())
            #expect(identity.caCertificate == fx.authority.caCertificate)
            #expect(MusterPKI.commonName(of: identity.certificate.subject) == identity.nodeID.uuidString.lowercased())
            #expect(try await fx.nodes.show(id: identity.nodeID).state == .joining)
            let firstCertificate = try SecureFile.read(paths.certificate)

            let session = CoordinatorSession(
                configuration: .init(
                    stateDirectory: stateDirectory, backoff: Backoff(base: .milliseconds(50), cap: .milliseconds(200))),
                logger: fx.logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await session.run() }
                defer { group.cancelAll() }
                try await ChannelFixture.eventually("the session is established and heartbeats flow") {
                    session.status.establishedCount >= 1 && session.status.heartbeatsSent >= 2
                }
                #expect(session.status.heartbeatInterval == .milliseconds(200))
                #expect(await fx.listener.sessionCount() == 1)
                // The agent counts a heartbeat when it sends it; the coordinator enqueues it a moment later.
                try await ChannelFixture.eventually("a heartbeat is stored") {
                    try await fx.nodes.heartbeats.flush(to: fx.database, logger: fx.logger)
                    return try await fx.nodes.show(id: identity.nodeID).lastReport != nil
                }
                let shown = try await fx.nodes.show(id: identity.nodeID)
                #expect(shown.state == .ready)
                #expect(shown.lastReport?.agentVersion == MusterVersion.current)
                #expect((shown.lastReport?.memoryTotalBytes ?? 0) > 0)

                try await ChannelFixture.eventually("the certificate is renewed over the session") {
                    session.status.renewals >= 1
                }
                #expect(try SecureFile.read(paths.certificate) != firstCertificate)

                // The coordinator drops the session; the agent reconnects with the renewed certificate.
                #expect(await fx.listener.disconnect(nodeID: identity.nodeID))
                try await ChannelFixture.eventually("the agent reconnected") {
                    session.status.establishedCount >= 2
                }
                // With 200 ms heartbeats on a loaded machine the session may flap once more; it must come back.
                try await ChannelFixture.eventually("the listener holds the node's session") {
                    await fx.listener.isConnected(nodeID: identity.nodeID)
                }
            }

            // The token allowed one join.
            await #expect {
                _ = try await fx.join(token)
            } throws: { ($0 as? MusterError)?.code == .tokenUsedUp }
        }
    }

    @Test func tokenErrorsArePreciseAndLeaveNoIdentity() async throws {
        try await ChannelFixture.with { fx in
            let unknown = JoinToken.generate(caPin: fx.authority.caPin)
            let expired = try await fx.token(ttl: .seconds(60), now: Date().addingTimeInterval(-3600))
            let revoked = try await fx.token()
            _ = try await fx.tokens.revoke(id: revoked.id, now: Date(), actor: "test")
            let valid = try await fx.token()
            let wrongSecret = JoinToken(id: valid.id, secret: String(repeating: "x", count: 32), caPin: valid.caPin)

            for (token, code) in [
                (unknown, MusterError.Code.tokenUnknown), (expired, .tokenExpired), (revoked, .tokenRevoked),
                (wrongSecret, .tokenUnknown),
            ] {
                let stateDirectory = "\(fx.directory)/refused-\(code)"
                await #expect {
                    try await JoinClient(
                        coordinator: fx.address, token: token, stateDirectory: stateDirectory,
                        facts: ChannelFixture.facts, logger: fx.logger
                    ).join()
                } throws: { error in
                    guard let error = error as? MusterError else { return false }
                    return error.code == code && !error.message.isEmpty
                }
                #expect(!NodeIdentity.exists(stateDirectory: stateDirectory))
            }
            #expect(try await fx.nodes.list().isEmpty)
            // The valid token still works after all that.
            _ = try await fx.join(valid)
        }
    }

    @Test func forgottenNodeIsRefusedAndTheAgentStops() async throws {
        try await ChannelFixture.with { fx in
            let (identity, stateDirectory) = try await fx.join(try await fx.token())
            let session = CoordinatorSession(
                configuration: .init(
                    stateDirectory: stateDirectory, backoff: Backoff(base: .milliseconds(50), cap: .milliseconds(200))),
                logger: fx.logger)
            let outcome = try await withThrowingTaskGroup(of: MusterError?.self) { group in
                group.addTask {
                    do {
                        try await session.run()
                        return nil
                    } catch let error as MusterError {
                        return error
                    }
                }
                try await ChannelFixture.eventually("the session is established") { session.status.connected }
                _ = try await fx.nodes.forget(id: identity.nodeID, now: Date(), actor: "test")
                await fx.listener.disconnect(nodeID: identity.nodeID)
                let result = try await group.next() ?? nil
                group.cancelAll()
                return result
            }
            #expect(outcome?.code == .nodeForgotten)
            #expect(outcome?.message.contains("forget") == true || outcome?.message.contains("forgotten") == true)
            #expect(await fx.listener.sessionCount() == 0)
        }
    }
}
