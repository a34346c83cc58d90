import Crypto
import Foundation
import Logging
import NIOCore
import TestSupport
import Testing
import X509

@testable import Agent
@testable import Coordinator
@testable import Shared

/// What port 7400 refuses, and how (real TLS, real listener, real store).
@Suite("Agent channel: rejections (real TLS + PostgreSQL)")
struct MTLSRejectionTests {
    @Test func caPinMismatchSendsNoSecret() async throws {
        try await ChannelFixture.with { fx in
            // A second, rogue coordinator with its own CA that records whatever reaches its directory.
            let rogueDirectory = try ChannelFixture.temporaryDirectory("rogue")
            defer { try? FileManager.default.removeItem(atPath: rogueDirectory) }
            let rogueCA = try CertificateAuthority.loadOrCreate(
                directory: rogueDirectory, serverNames: [], serverAddresses: [], logger: fx.logger)
            let stub = RecordingNodeDirectoryStub()
            let rogue = AgentListener(
                configuration: .init(host: "127.0.0.1", port: 0), authority: rogueCA, directory: stub, logger: fx.logger
            )
            let token = try await fx.token(uses: 1)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await rogue.run() }
                defer { group.cancelAll() }
                let port = try #require(await rogue.waitUntilBound())
                await #expect {
                    _ = try await fx.join(token, to: CoordinatorAddress(host: "127.0.0.1", port: port))
                } throws: { error in
                    guard let error = error as? MusterError else { return false }
                    return error.code == .caPinMismatch && error.message.contains(token.caPin.description)
                }
            }
            #expect(stub.recorded.isEmpty, "the rogue coordinator received: \(stub.recorded)")
            // The token was not consumed: it still joins the real coordinator.
            _ = try await fx.join(token)
        }
    }

    @Test func clientCertificateFromAnotherCAIsRefusedInTheHandshake() async throws {
        try await ChannelFixture.with { fx in
            let otherDirectory = try ChannelFixture.temporaryDirectory("other-ca")
            defer { try? FileManager.default.removeItem(atPath: otherDirectory) }
            let otherCA = try CertificateAuthority.loadOrCreate(
                directory: otherDirectory, serverNames: [], serverAddresses: [], logger: fx.logger)
            let key = P256.Signing.PrivateKey()
            let nodeID = UUID()
            let issued = try otherCA.signNodeCSR(
                try MusterPKI.makeCSR(key: key, commonName: "x"), nodeID: nodeID, validity: .seconds(3600))
            let certificate = try PEM.certificate(from: issued.certificatePEM)
            await #expect {
                try await CoordinatorConnection.withConnection(
                    to: fx.address, certificateChain: [certificate], privateKey: key,
                    trust: .certificateAuthority(fx.authority.caCertificate)
                ) { inbound, outbound in
                    try await outbound.write(try Message.hello(Hello(nodeID: nodeID, agentVersion: "0")).envelope())
                    _ = try await CoordinatorConnection.firstMessage(inbound)
                }
            } throws: { ($0 as? MusterError)?.code == .connectionFailed }
            #expect(await fx.listener.sessionCount() == 0)
        }
    }

    @Test func noClientCertificateIsRefusedByOpenSSL() async throws {
        try await ChannelFixture.with { fx in
            let result = try PostgresHarness.run(
                "/usr/bin/timeout",
                [
                    "5", "/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:\(fx.address.port)", "-tls1_3",
                    "-brief",
                    "-ign_eof",
                ])
            #expect(result.output.contains("certificate required"), "\(result.output)")
            let tls12 = try PostgresHarness.run(
                "/usr/bin/timeout",
                ["5", "/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:\(fx.address.port)", "-tls1_2", "-brief"])
            #expect(!tls12.output.contains("Protocol version"), "TLS 1.2 must fail: \(tls12.output)")
        }
    }

    @Test func badFramesGetErrorFramesAndNeverCrashTheListener() async throws {
        try await ChannelFixture.with { fx in
            let (identity, _) = try await fx.join(try await fx.token())
            func exchange(_ writes: [ByteBuffer], expect: Int) async throws -> ([Envelope], Bool) {
                let result = try await RawClient.exchange(
                    fx.address, certificate: identity.certificate, key: identity.privateKey,
                    ca: fx.authority.caCertificate, writes: writes, expect: expect)
                return (result.envelopes, result.closedByServer)
            }
            func errorCode(_ envelope: Envelope?) throws -> String? {
                guard let envelope, case .error(let body) = try Message(envelope) else { return nil }
                return body.code
            }
            let hello = Message.hello(Hello(nodeID: identity.nodeID, agentVersion: "test"))

            // Garbage inside a well-formed length prefix.
            var (frames, closed) = try await exchange([RawClient.frame("\u{01}garbage not json")], expect: 2)
            #expect(try errorCode(frames.first) == "PROTOCOL_ERROR")
            #expect(closed)

            // Oversize: only the length arrives; the listener refuses before buffering.
            var oversize = ByteBuffer()
            oversize.writeInteger(UInt32((64 << 10) + 1), endianness: .big)
            oversize.writeString("{")
            (frames, closed) = try await exchange([oversize], expect: 2)
            #expect(try errorCode(frames.first) == "FRAME_TOO_LARGE")
            #expect(closed)

            // Unknown type: error reply with the request's id, and the connection stays usable.
            (frames, closed) = try await exchange(
                [
                    RawClient.frame(#"{"v":1,"id":"u-1","type":"teleport","body":{}}"#),
                    try RawClient.frame(hello, id: "h-1"),
                ],
                expect: 2)
            #expect(frames.count == 2)
            #expect(try errorCode(frames.first) == "PROTOCOL_ERROR")
            #expect(frames.first?.id == "u-1")
            #expect(frames.last?.type == .welcome)
            #expect(frames.last?.id == "h-1")
            #expect(!closed)

            // Wrong protocol version in hello: an error naming both sides, then close.
            (frames, closed) = try await exchange(
                [
                    try RawClient.frame(
                        .hello(
                            Hello(nodeID: identity.nodeID, agentVersion: "t", protocolVersions: [ProtocolVersion(99)])))
                ],
                expect: 2)
            #expect(try errorCode(frames.first) == "PROTOCOL_VERSION")
            if let first = frames.first, case .error(let body) = try Message(first) {
                #expect(body.message.contains("v99") && body.message.contains("v1"), "\(body.message)")
            }
            #expect(closed)

            // Wrong envelope version.
            (frames, closed) = try await exchange(
                [RawClient.frame(#"{"v":7,"id":"x","type":"hello","body":{}}"#)], expect: 2)
            #expect(try errorCode(frames.first) == "PROTOCOL_VERSION")
            #expect(closed)

            // A hello for another node than the certificate names.
            (frames, closed) = try await exchange(
                [try RawClient.frame(.hello(Hello(nodeID: UUID(), agentVersion: "t")))], expect: 2)
            #expect(try errorCode(frames.first) == "FORBIDDEN")
            #expect(closed)

            // A truncated frame, then the client goes away.
            var truncated = ByteBuffer()
            truncated.writeInteger(UInt32(100), endianness: .big)
            truncated.writeString("only ten b")
            _ = try await RawClient.exchange(
                fx.address, certificate: identity.certificate, key: identity.privateKey, ca: fx.authority.caCertificate,
                writes: [truncated], expect: 0, closeAfterWrite: true)

            // A bootstrap certificate may only join.
            let key = P256.Signing.PrivateKey()
            let bootstrap = try MusterPKI.makeBootstrapCertificate(key: key, hostname: "b")
            let bootstrapResult = try await RawClient.exchange(
                fx.address, certificate: bootstrap, key: key, ca: fx.authority.caCertificate,
                writes: [try RawClient.frame(hello)], expect: 2)
            #expect(try errorCode(bootstrapResult.envelopes.first) == "FORBIDDEN")
            #expect(bootstrapResult.closedByServer)

            // After all of it the listener still serves sessions.
            (frames, closed) = try await exchange([try RawClient.frame(hello)], expect: 1)
            #expect(frames.first?.type == .welcome)
        }
    }
}
