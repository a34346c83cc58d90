import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization
import TestSupport
import Testing
import X509

@testable import Agent
@testable import Coordinator
@testable import Shared

/// An in-process coordinator for agent-channel tests: the real ``CertificateAuthority`` in a temp dir, the real
/// ``NodeStore``/``TokenStore`` on a fresh database of the harness's PostgreSQL, and a real ``AgentListener`` on
/// 127.0.0.1 with port 0.
struct ChannelFixture: Sendable {
    let directory: String
    let authority: CertificateAuthority
    let database: Database
    let nodes: NodeStore
    let tokens: TokenStore
    let listener: AgentListener
    let address: CoordinatorAddress
    /// Delivers tasks over the listener's sessions; its clock is ``clock``.
    let dispatcher: TaskDispatcher
    /// The dispatcher's clock: real time plus an offset tests can advance (lease expiry without waiting).
    let clock: TestClock
    /// Published module files the listener serves to agents (`<directory>/coordinator/modules`).
    let modules: ModuleRepository
    let logger: Logger

    var tasks: TaskStore { dispatcher.store }

    static let logger: Logger = {
        var logger = Logger(label: "muster.test.channel")
        logger.logLevel = ProcessInfo.processInfo.environment["MUSTER_TEST_LOG"] == "1" ? .debug : .critical
        return logger
    }()

    static func temporaryDirectory(_ prefix: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "muster-\(prefix)-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Runs `body` against a fresh coordinator; tears everything down afterwards, also on failure.
    static func with(
        configure: (inout AgentListener.Configuration) -> Void = { _ in },
        taskPolicy: TaskRetryPolicy = ChannelFixture.taskPolicy,
        _ body: @Sendable (ChannelFixture) async throws -> Void
    ) async throws {
        let directory = try temporaryDirectory("channel")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (name, url) = try PostgresHarness.makeDatabase(prefix: "chan")
        defer { PostgresHarness.dropDatabase(name) }
        let logger = Self.logger
        let authority = try CertificateAuthority.loadOrCreate(
            directory: "\(directory)/pki", serverNames: [], serverAddresses: ["127.0.0.1"], logger: logger)
        let database = Database(configuration: try Database.Configuration(url: url), queryTimeout: .seconds(60), logger: logger)
        var configuration = AgentListener.Configuration(
            host: "127.0.0.1", port: 0, maxFrameBytes: 64 << 10, minimumHeartbeatInterval: .milliseconds(200))
        configure(&configuration)
        let clock = TestClock()
        let dispatcher = TaskDispatcher(
            store: TaskStore(database: database, policy: taskPolicy, logger: logger),
            configuration: .init(tickInterval: .milliseconds(100)), now: { clock.now }, logger: logger)
        let modules = ModuleRepository(stateDirectory: "\(directory)/coordinator")
        let listener = AgentListener(
            configuration: configuration, authority: authority,
            directory: NodeStore(database: database, heartbeats: HeartbeatBatcher(), logger: logger),
            tasks: dispatcher, modules: modules, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await database.client.run() }
            group.addTask { try await listener.run() }
            defer { group.cancelAll() }
            try await SchemaMigrations.apply(on: database, logger: logger)
            group.addTask { try await dispatcher.run() }
            let port = try #require(await listener.waitUntilBound())
            let nodes = try #require(listener.directory as? NodeStore)
            let fixture = ChannelFixture(
                directory: directory, authority: authority, database: database, nodes: nodes,
                tokens: TokenStore(database: database, logger: logger), listener: listener,
                address: CoordinatorAddress(host: "127.0.0.1", port: port), dispatcher: dispatcher, clock: clock,
                modules: modules, logger: logger)
            try await body(fixture)
        }
    }

    /// Leases long enough never to run out by themselves in a test (tests advance ``clock`` instead), retries
    /// without a noticeable backoff.
    static let taskPolicy = TaskRetryPolicy(
        leaseDuration: .seconds(60), backoffBase: .milliseconds(1), backoffCap: .milliseconds(1))

    /// A new join token of this coordinator.
    func token(uses: Int? = nil, ttl: Duration = .seconds(3600), now: Date = Date()) async throws -> JoinToken {
        try await tokens.create(
            ttl: ttl, usesAllowed: uses, labels: ["suite": "channel"], caPin: authority.caPin, now: now, actor: "test"
        ).token
    }

    static let facts = HostFacts(
        hostname: "test-node", machineID: "0123456789abcdef0123456789abcdef", os: "Debian GNU/Linux 12",
        kernel: "6.18.0", cpuCount: 2, memoryBytes: 4 << 30, agentVersion: MusterVersion.current)

    /// Joins with the real ``JoinClient`` into a new state dir under the fixture's directory.
    func join(_ token: JoinToken, to target: CoordinatorAddress? = nil) async throws -> (NodeIdentity, String) {
        let stateDirectory = "\(directory)/agent-\(UUID().uuidString.prefix(8))"
        let identity = try await JoinClient(
            coordinator: target ?? address, token: token, stateDirectory: stateDirectory, facts: Self.facts,
            logger: logger
        ).join()
        return (identity, stateDirectory)
    }

    /// Polls `condition` every 50 ms until it holds; fails the test after `limit` (a hang guard, not a timing
    /// assertion: generous, because test machines run several test processes and builds on 2 cores).
    static func eventually(
        _ what: String, limit: Duration = .seconds(90), _ condition: () async throws -> Bool
    ) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while clock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("timed out waiting until \(what)")
        throw MusterError(.timeout, "timed out waiting until \(what)")
    }
}

/// A TLS client speaking raw bytes to the listener, for frames the real agent would never send.
enum RawClient {
    /// Connects with `certificate`/`key`, writes `bytes`, then reads frames until `expect` frames arrived or the
    /// server closed the connection. Returns the frames and whether the server closed.
    static func exchange(
        _ address: CoordinatorAddress, certificate: Certificate, key: P256.Signing.PrivateKey, ca: Certificate,
        writes: [ByteBuffer], expect: Int, closeAfterWrite: Bool = false
    ) async throws -> (envelopes: [Envelope], closedByServer: Bool) {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv13
        tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: try PEM.der(ca), format: .der)])
        tls.certificateChain = [.certificate(try NIOSSLCertificate(bytes: try PEM.der(certificate), format: .der))]
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem))
        let context = try NIOSSLContext(configuration: tls)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: context, serverHostname: MusterPKI.coordinatorServerName))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            for buffer in writes { try await outbound.write(buffer) }
            if closeAfterWrite { return ([], false) }
            var pending = ByteBuffer()
            var envelopes: [Envelope] = []
            var decoder = FrameDecoder()
            do {
                for try await chunk in inbound {
                    var chunk = chunk
                    pending.writeBuffer(&chunk)
                    while let frame = try decoder.nextFrame(&pending) {
                        envelopes.append(try Envelope(frame: frame))
                    }
                    if envelopes.count >= expect { return (envelopes, false) }
                }
            } catch {
                // A TLS error after the server closed counts as closed.
            }
            return (envelopes, true)
        }
    }

    static func frame(_ json: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(json.utf8.count), endianness: .big)
        buffer.writeString(json)
        return buffer
    }

    static func frame(_ message: Message, id: String = Envelope.makeID()) throws -> ByteBuffer {
        frame(String(decoding: try message.envelope(id: id).json, as: UTF8.self))
    }
}

/// A ``NodeDirectory`` that only records calls — used solely as the directory of a *rogue* coordinator in the
/// CA-pin test, to prove it never receives a join request. Everything it is asked fails.
final class RecordingNodeDirectoryStub: NodeDirectory {
    private let calls = Mutex<[String]>([])

    var recorded: [String] { calls.withLock { $0 } }

    func redeemJoinToken(tokenID: String, secret: String, facts: HostFacts, now: Date) async throws -> NodeRecord {
        calls.withLock { $0.append("redeem \(tokenID) \(secret)") }
        throw MusterError(.tokenUnknown, "stub")
    }

    func recordCertificate(nodeID: UUID, serial: String, notAfter: Date, pem: String) async throws {
        calls.withLock { $0.append("recordCertificate") }
    }

    func admission(of nodeID: UUID) async throws -> NodeAdmission {
        calls.withLock { $0.append("admission") }
        return .unknown
    }

    func sessionOpened(nodeID: UUID, at: Date, address: String?) async throws {
        calls.withLock { $0.append("sessionOpened") }
    }

    func enqueueHeartbeat(nodeID: UUID, report: HealthReport, receivedAt: Date) {
        calls.withLock { $0.append("heartbeat") }
    }
}

/// Real time plus an offset that tests advance, for the task dispatcher's leases and backoffs.
final class TestClock: Sendable {
    private let offset = Mutex<TimeInterval>(0)

    var now: Date { Date().addingTimeInterval(offset.withLock { $0 }) }

    func advance(by duration: Duration) {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        offset.withLock { $0 += seconds }
    }
}
