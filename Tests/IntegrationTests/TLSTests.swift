import Foundation
import TestSupport
import Testing

/// `openssl s_client` against a real coordinator: both ports speak TLS 1.3 only, and the agent port refuses a
/// client that presents no certificate.
@Suite("TLS on 7400 and 7401 (openssl s_client)", .serialized)
struct TLSTests {
    /// Runs `openssl s_client -brief` with stdin at EOF: it handshakes, prints the session and closes.
    /// With `waitForServer`, `-ign_eof` keeps it reading after that EOF, so an alert the server sends after the
    /// handshake (TLS 1.3 checks the client certificate then) is seen; `timeout` bounds the read.
    static func sClient(_ address: String, _ extra: [String], waitForServer: Bool = false) async throws
        -> CommandResult
    {
        try await runCommand(
            "/usr/bin/timeout",
            ["10", "/usr/bin/openssl", "s_client", "-connect", address, "-brief"] + (waitForServer ? ["-ign_eof"] : [])
                + extra,
            timeout: .seconds(60))
    }

    @Test("TLS 1.3 only on both ports; 7400 refuses a handshake without a client certificate")
    func tls13AndClientCertificates() async throws {
        let scratch = try ScratchDirectory("tls")
        let database = try PostgresHarness.makeDatabase(prefix: "tls")
        defer {
            PostgresHarness.dropDatabase(database.name)
            scratch.remove()
        }
        let coordinator = try await CoordinatorProcess.start(
            stateDir: try scratch.sub("coordinator"), databaseURL: database.url, listenHost: "127.0.0.1")
        defer { coordinator.process.killAndReap() }
        let agentPort = coordinator.info.agentAddress
        let adminPort = coordinator.info.adminAddress
        let admin =
            try JSONSerialization.jsonObject(
                with: try Data(contentsOf: URL(fileURLWithPath: "\(coordinator.stateDir)/admin.json")))
            as? [String: Any]
        let certFile = try #require(admin?["certFile"] as? String)
        let keyFile = try #require(admin?["keyFile"] as? String)
        let caFile = try #require(admin?["caFile"] as? String)

        // Admin port: TLS 1.3 handshake (client certificate optional there: /health needs none).
        let admin13 = try await Self.sClient(adminPort, ["-tls1_3", "-CAfile", caFile])
        #expect(admin13.stderr.contains("Protocol version: TLSv1.3"), "\(admin13.stderr)")
        // ... and nothing older.
        let admin12 = try await Self.sClient(adminPort, ["-tls1_2"])
        #expect(!admin12.stderr.contains("Protocol version"), "TLS 1.2 must fail on 7401: \(admin12.stderr)")

        // Agent port with a certificate of the cluster CA: TLS 1.3.
        let agent13 = try await Self.sClient(agentPort, ["-tls1_3", "-cert", certFile, "-key", keyFile])
        #expect(agent13.stderr.contains("Protocol version: TLSv1.3"), "\(agent13.stderr)")
        #expect(!agent13.stderr.contains("alert"), "\(agent13.stderr)")
        let agent12 = try await Self.sClient(agentPort, ["-tls1_2", "-cert", certFile, "-key", keyFile])
        #expect(!agent12.stderr.contains("Protocol version"), "TLS 1.2 must fail on 7400: \(agent12.stderr)")

        // Agent port without a client certificate: the server aborts with "certificate required".
        let noCert = try await Self.sClient(agentPort, ["-tls1_3"], waitForServer: true)
        #expect(noCert.stderr.contains("alert certificate required"), "\(noCert.stderr)")
        #expect(noCert.status != 0 && noCert.status != 124, "the server must close the connection (\(noCert.status))")
    }
}
