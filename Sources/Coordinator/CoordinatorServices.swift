import Crypto
import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals
import Shared
import Synchronization

/// Assembles and runs `muster serve`.
///
/// Order (one `ServiceGroup`, shut down in reverse): embedded PostgreSQL (started before the group, because
/// everything needs it) → `PostgresClient` → ``CoordinatorCore``, which migrates the schema and then runs the
/// agent listener, the admin API, the heartbeat flusher, the sweeper and the readiness reporter in a nested
/// group. SIGTERM / SIGINT shut everything down gracefully.
public enum CoordinatorServices {
    /// What a running coordinator reports once it is ready (also written to `admin.json`).
    public struct Ready: Sendable {
        public var agentPort: Int
        public var adminPort: Int
        public var client: AdminClientConfiguration
    }

    /// Runs the coordinator until shutdown.
    /// - Parameters:
    ///   - signals: Signals that start a graceful shutdown (tests pass none and cancel the task instead).
    ///   - onReady: Called once the schema is current and both listeners are bound.
    /// - Throws: ``MusterError``: `.databaseUnavailable` when the database cannot be reached at boot within
    ///   ``CoordinatorConfiguration/databaseBootTimeout``, `.io` for state-directory, PKI or listen problems.
    public static func run(
        configuration: CoordinatorConfiguration, logger: Logger,
        signals: [UnixSignal] = [.sigterm, .sigint],
        onReady: @escaping @Sendable (Ready) async -> Void = { _ in }
    ) async throws {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        } catch {
            throw MusterError(
                .io, "cannot create the state directory \(configuration.stateDirectory): \(error)",
                hint: "pass --state-dir to a writable directory")
        }
        // admin.json appears again only when this coordinator is ready: scripts poll for it.
        try? fm.removeItem(atPath: configuration.adminClientFile)

        var serverNames: [String] = []
        var serverAddresses: [String] = []
        for host in [configuration.advertisedHost, configuration.agentListen.host, configuration.adminListen.host] {
            if host.isEmpty || host == "0.0.0.0" || host == "::" { continue }
            if IPAddressText.isIPAddress(host) { serverAddresses.append(host) } else { serverNames.append(host) }
        }
        let authority = try CertificateAuthority.loadOrCreate(
            directory: configuration.pkiDirectory, serverNames: serverNames, serverAddresses: serverAddresses,
            logger: logger)

        let embedded: EmbeddedPostgres?
        let databaseConfiguration: Database.Configuration
        if let url = configuration.databaseURL {
            embedded = nil
            databaseConfiguration = try Database.Configuration(url: url)
        } else {
            var pgLogger = logger
            pgLogger[metadataKey: "component"] = "embedded-postgres"
            let server = EmbeddedPostgres(
                configuration: .init(directory: configuration.embeddedPostgresDirectory), logger: pgLogger)
            do {
                try await server.start()
            } catch {
                await server.stopAndWait()
                throw error
            }
            embedded = server
            databaseConfiguration = server.databaseConfiguration
        }

        var dbLogger = logger
        dbLogger[metadataKey: "component"] = "database"
        let database = Database(configuration: databaseConfiguration, logger: dbLogger)
        let core = CoordinatorCore(
            configuration: configuration, authority: authority, database: database, logger: logger, onReady: onReady)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let embedded {
            services.append(.init(service: embedded, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        services.append(.init(service: database.client))
        services.append(
            .init(
                service: core, successTerminationBehavior: .gracefullyShutdownGroup,
                failureTerminationBehavior: .gracefullyShutdownGroup))
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: signals, logger: logger))
        do {
            try await group.run()
        } catch {
            await embedded?.stopAndWait()
            let unwrapped = Self.unwrap(error)
            // A service that surfaces its cancellation while shutting down is not a failure of the coordinator.
            if unwrapped is CancellationError {
                logger.debug("a service ended with CancellationError during shutdown")
                return
            }
            throw unwrapped
        }
        await embedded?.stopAndWait()
    }

    /// `ServiceGroup` wraps a failing service's error; show the operator ours.
    static func unwrap(_ error: any Error) -> any Error {
        if error is MusterError || error is CancellationError { return error }
        let mirror = Mirror(reflecting: error)
        for child in mirror.children {
            if let inner = child.value as? MusterError { return inner }
            if let inner = child.value as? CancellationError { return inner }
        }
        return error
    }
}

/// The part of the coordinator that needs the database: schema migration at boot, then the listeners and the
/// background services in a nested `ServiceGroup` (it follows the outer group's graceful shutdown).
struct CoordinatorCore: Service {
    let configuration: CoordinatorConfiguration
    let authority: CertificateAuthority
    let database: Database
    let logger: Logger
    let onReady: @Sendable (CoordinatorServices.Ready) async -> Void

    func run() async throws {
        try await migrateAtBoot()
        let startedAt = Date()
        let batcher = HeartbeatBatcher()
        let nodes = NodeStore(database: database, heartbeats: batcher, logger: logger)
        let tokens = TokenStore(database: database, logger: logger)
        let heartbeats = configuration.heartbeats

        var taskLogger = logger
        taskLogger[metadataKey: "component"] = "tasks"
        let dispatcher = TaskDispatcher(store: TaskStore(database: database, logger: taskLogger), logger: taskLogger)

        var workflowLogger = logger
        workflowLogger[metadataKey: "component"] = "workflows"
        let workflows = WorkflowStore(database: database, logger: workflowLogger)
        let runner = WorkflowRunner(
            store: workflows, dispatch: { node in await dispatcher.dispatch(nodeID: node) }, logger: workflowLogger)
        dispatcher.onTaskFinished { runner.wake() }

        let repository = ModuleRepository(stateDirectory: configuration.stateDirectory)
        try repository.prepare()
        var listenerLogger = logger
        listenerLogger[metadataKey: "component"] = "agent-listener"
        let listener = AgentListener(
            configuration: .init(
                host: configuration.agentListen.host, port: configuration.agentListen.port,
                heartbeatBudgetPerSecond: heartbeats.budgetPerSecond,
                minimumHeartbeatInterval: heartbeats.minimumInterval),
            authority: authority, directory: nodes, tasks: dispatcher, modules: repository, logger: listenerLogger)

        let advertised = configuration.advertisedHost
        let agentListen = configuration.agentListen
        let dependencies = AdminDependencies(
            database: database, nodes: nodes, tokens: tokens, caPin: authority.caPin,
            joinAddress: {
                let port = await listener.boundPort ?? agentListen.port
                return CoordinatorConfiguration.ListenAddress(host: advertised, port: port).description
            },
            sessionCount: { await listener.sessionCount() },
            disconnect: { id in _ = await listener.disconnect(nodeID: id) }, dispatcher: dispatcher,
            modules: ModuleServices(
                store: ModuleStore(database: database, logger: logger), repository: repository,
                trustedKey: authority.moduleSigningKey.publicKey),
            workflows: workflows, wakeWorkflows: { runner.wake() })
        let adminPort = AsyncStream<Int>.makeStream()
        var adminLogger = logger
        adminLogger[metadataKey: "component"] = "admin-api"
        let admin = Application(
            router: AdminRouter.make(dependencies: dependencies),
            server: try .tls(.http1(), tlsConfiguration: try authority.makeAdminAPITLSConfiguration()),
            configuration: .init(
                address: .hostname(configuration.adminListen.host, port: configuration.adminListen.port),
                serverName: "muster"),
            onServerRunning: { channel in
                adminPort.continuation.yield(channel.localAddress?.port ?? 0)
                adminPort.continuation.finish()
            },
            logger: adminLogger)

        let flusher = HeartbeatFlusher(
            batcher: batcher, database: database, interval: heartbeats.flushInterval, logger: logger)
        let sweeper = NodeSweeper(
            database: database, batcher: batcher,
            policy: SweepPolicy(
                heartbeatTTL: heartbeats.minimumInterval, grace: heartbeats.grace,
                failoverGrace: heartbeats.failoverGrace, startedAt: startedAt),
            interval: min(max(heartbeats.minimumInterval / 2, .milliseconds(250)), .seconds(5)),
            currentTTL: { await listener.currentHeartbeatInterval() }, logger: logger)
        let reporter = ReadinessReporter(
            configuration: configuration, authority: authority, listener: listener, adminPort: adminPort.stream,
            logger: logger, onReady: onReady)

        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: listener), .init(service: admin), .init(service: flusher), .init(service: sweeper),
                    .init(service: dispatcher), .init(service: runner),
                    .init(service: reporter, successTerminationBehavior: .ignore),
                ],
                logger: logger))
        try await group.run()
    }

    /// Applies migrations, retrying while the database is unreachable, up to the boot timeout.
    private func migrateAtBoot() async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.databaseBootTimeout
        var attempt = 0
        while true {
            attempt += 1
            do {
                var bounded = database
                bounded.queryTimeout = max(.seconds(1), min(.seconds(5), deadline - clock.now))
                try await SchemaMigrations.apply(on: bounded, logger: logger)
                return
            } catch let error as MusterError where error.code == .databaseUnavailable {
                if clock.now >= deadline {
                    throw MusterError(
                        .databaseUnavailable,
                        "cannot reach PostgreSQL (\(database.configuration.redacted)) within \(configuration.databaseBootTimeout): \(error.message)",
                        hint: "start the database or fix --database-url; without --database-url muster runs its own")
                }
                if attempt == 1 {
                    logger.warning("database not reachable yet; retrying", metadata: ["error": "\(error.message)"])
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }
}

/// Writes `admin.json` and tells systemd `READY=1` once both listeners are bound, then pings the systemd
/// watchdog until shutdown (`STOPPING=1`).
struct ReadinessReporter: Service {
    let configuration: CoordinatorConfiguration
    let authority: CertificateAuthority
    let listener: AgentListener
    let adminPort: AsyncStream<Int>
    let logger: Logger
    let onReady: @Sendable (CoordinatorServices.Ready) async -> Void

    func run() async throws {
        guard let agentPort = await listener.waitUntilBound() else {
            throw MusterError(
                .io, "the agent listener could not listen on \(configuration.agentListen)",
                hint: "is another process using the port? pass --listen HOST:PORT")
        }
        var iterator = adminPort.makeAsyncIterator()
        guard let adminPort = await iterator.next(), adminPort > 0 else {
            throw MusterError(
                .io, "the admin API could not listen on \(configuration.adminListen)",
                hint: "is another process using the port? pass --admin-listen HOST:PORT")
        }
        let adminHost = configuration.adminListen.isWildcard ? "127.0.0.1" : configuration.adminListen.host
        let paths = authority.paths
        let client = AdminClientConfiguration(
            adminAddress: CoordinatorConfiguration.ListenAddress(host: adminHost, port: adminPort).description,
            agentAddress: CoordinatorConfiguration.ListenAddress(host: configuration.advertisedHost, port: agentPort)
                .description,
            serverName: MusterPKI.coordinatorServerName, caFile: paths.caCertificate, certFile: paths.adminCertificate,
            keyFile: paths.adminKey)
        try client.write(to: configuration.adminClientFile)
        logger.notice(
            "coordinator ready",
            metadata: [
                "agents": "\(configuration.agentListen.host):\(agentPort)",
                "admin": "\(configuration.adminListen.host):\(adminPort)",
                "advertise": "\(configuration.advertisedHost)", "client": "\(configuration.adminClientFile)",
            ])
        SDNotify.send("READY=1\nSTATUS=coordinator ready")
        await onReady(.init(agentPort: agentPort, adminPort: adminPort, client: client))
        if let interval = SDNotify.watchdogInterval() {
            for await _ in AsyncTimerSequence.repeating(every: interval).cancelOnGracefulShutdown() {
                SDNotify.send("WATCHDOG=1")
            }
        } else {
            try? await gracefulShutdown()
        }
        SDNotify.send("STOPPING=1")
    }
}

/// Tells IP literals from host names (for certificate SANs).
enum IPAddressText {
    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}
