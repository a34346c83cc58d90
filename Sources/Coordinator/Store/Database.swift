import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Shared

/// The coordinator's handle on PostgreSQL: a postgres-nio ``PostgresClient`` pool plus the rules every store
/// follows when it talks to the database.
///
/// Every call goes through ``Database/withConnection(_:_:)`` or ``Database/transaction(_:_:)``, which
/// - bound the wait with ``Database/queryTimeout`` (the pool itself waits up to 15 s for a connection before its
///   circuit breaker opens, and a lost server must turn into `503` quickly), and
/// - map every failure to a ``MusterError``: connection problems become `.databaseUnavailable`, a unique
///   violation becomes `.conflict`, anything else from the server `.internal` with the server's message.
///
/// The client is run as a `Service` in the coordinator's `ServiceGroup` (``Database/client``).
public struct Database: Sendable {
    /// Where and how to connect.
    public struct Configuration: Sendable, Equatable {
        public enum Endpoint: Sendable, Equatable {
            case tcp(host: String, port: Int)
            case unixSocket(path: String)
        }
        public var endpoint: Endpoint
        public var username: String
        /// Never logged or shown in errors.
        public var password: String?
        public var database: String
        /// Whether to require TLS towards a TCP server (`sslmode=require` / `verify-full`).
        public var requireTLS: Bool
        /// Maximum connections in the pool.
        public var maximumConnections: Int

        public init(
            endpoint: Endpoint, username: String, password: String? = nil, database: String, requireTLS: Bool = false,
            maximumConnections: Int = 10
        ) {
            self.endpoint = endpoint
            self.username = username
            self.password = password
            self.database = database
            self.requireTLS = requireTLS
            self.maximumConnections = maximumConnections
        }

        /// Parses `postgres://user[:password]@host[:port]/database[?sslmode=disable|require&host=/socket/dir]`.
        ///
        /// A `host` query item naming a directory selects the unix socket `<dir>/.s.PGSQL.<port>`, as libpq does.
        /// - Throws: ``MusterError`` `.invalidInput` naming the part that is wrong (never echoing the password).
        public init(url text: String) throws {
            guard let comps = URLComponents(string: text), let scheme = comps.scheme,
                scheme == "postgres" || scheme == "postgresql"
            else {
                throw MusterError(
                    .invalidInput, "the database URL must look like postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                    hint: "for example --database-url postgres://muster@127.0.0.1:5432/muster?sslmode=disable")
            }
            let items = comps.queryItems ?? []
            let port = comps.port ?? 5432
            let socketDir = items.first { $0.name == "host" }?.value
            let database = String(comps.path.drop { $0 == "/" })
            guard !database.isEmpty else {
                throw MusterError(.invalidInput, "the database URL names no database (the part after the last '/')")
            }
            let endpoint: Endpoint
            if let socketDir, socketDir.hasPrefix("/") {
                endpoint = .unixSocket(path: "\(socketDir)/.s.PGSQL.\(port)")
            } else if let host = comps.host, !host.isEmpty {
                endpoint = .tcp(host: host, port: port)
            } else {
                throw MusterError(.invalidInput, "the database URL names no host")
            }
            let sslmode = items.first { $0.name == "sslmode" }?.value ?? "prefer"
            self.init(
                endpoint: endpoint, username: comps.user ?? "postgres", password: comps.password,
                database: database, requireTLS: sslmode == "require" || sslmode.hasPrefix("verify"))
        }

        /// A description without the password, for logs and errors.
        public var redacted: String {
            switch endpoint {
            case .tcp(let host, let port): "postgres://\(username)@\(host):\(port)/\(database)"
            case .unixSocket(let path): "postgres://\(username)@/\(database) (socket \(path))"
            }
        }

        func clientConfiguration() -> PostgresClient.Configuration {
            var config: PostgresClient.Configuration
            switch endpoint {
            case .tcp(let host, let port):
                config = PostgresClient.Configuration(
                    host: host, port: port, username: username, password: password, database: database,
                    tls: requireTLS ? .require(.makeClientConfiguration()) : .disable)
            case .unixSocket(let path):
                config = PostgresClient.Configuration(
                    unixSocketPath: path, username: username, password: password, database: database)
            }
            config.options.maximumConnections = maximumConnections
            config.options.connectTimeout = .seconds(3)
            // Detect a dead server on idle connections reasonably quickly.
            config.options.keepAliveBehavior = .init(frequency: .seconds(10))
            return config
        }
    }

    /// The pool. Add it to the `ServiceGroup`; nothing works until it runs.
    public let client: PostgresClient
    public let configuration: Configuration
    /// Upper bound for one store operation including the wait for a connection.
    public var queryTimeout: Duration
    let logger: Logger

    public init(configuration: Configuration, queryTimeout: Duration = .seconds(5), logger: Logger) {
        self.configuration = configuration
        self.queryTimeout = queryTimeout
        self.logger = logger
        self.client = PostgresClient(configuration: configuration.clientConfiguration(), backgroundLogger: logger)
    }

    /// Runs `body` with a pooled connection, within ``queryTimeout``, mapping errors to ``MusterError``.
    /// - Parameters:
    ///   - operation: Short name of what is being done, used in error messages ("list nodes").
    ///   - body: Work on the connection. It must not keep the connection.
    public func withConnection<Result: Sendable>(
        _ operation: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let client = self.client
        return try await bounded(operation) {
            try await client.withConnection { connection in try await body(connection) }
        }
    }

    /// Runs `body` inside `BEGIN … COMMIT` (rolled back when it throws), within ``queryTimeout``.
    public func transaction<Result: Sendable>(
        _ operation: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let client = self.client
        let logger = self.logger
        return try await bounded(operation) {
            try await client.withConnection { connection in
                try await connection.withTransaction(logger: logger) { try await body($0) }
            }
        }
    }

    /// A round trip (`SELECT 1`), used by `/health/deep`; returns its duration.
    public func ping() async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        try await withConnection("ping") { connection in
            try await connection.run("SELECT 1", logger: Logger(label: "muster.db.ping"))
            return ()
        }
        return clock.now - start
    }

    // MARK: - Bounding and error mapping

    private func bounded<Result: Sendable>(
        _ operation: String, _ body: @escaping @Sendable () async throws -> Result
    ) async throws -> Result {
        let timeout = queryTimeout
        let redacted = configuration.redacted
        do {
            return try await withDeadline(
                timeout,
                onTimeout: {
                    MusterError(
                        .databaseUnavailable,
                        "PostgreSQL (\(redacted)) did not answer within \(timeout) while trying to \(operation)",
                        hint: "check that the database server is running and reachable; Muster retries on its own")
                }, body)
        } catch {
            throw Self.map(error, operation: operation, redacted: redacted)
        }
    }

    /// Maps any error from postgres-nio or the pool into a ``MusterError``.
    static func map(_ error: any Error, operation: String, redacted: String) -> MusterError {
        if let muster = error as? MusterError { return muster }
        if let transaction = error as? PostgresTransactionError {
            // The closure's own error is what matters; BEGIN/COMMIT/ROLLBACK failures are connection trouble.
            if let inner = transaction.closureError ?? transaction.beginError ?? transaction.commitError {
                return map(inner, operation: operation, redacted: redacted)
            }
        }
        if let psql = error as? PSQLError {
            if psql.code == .server {
                let state = psql.serverInfo?[.sqlState] ?? "?"
                let message = psql.serverInfo?[.message] ?? "unknown server error"
                if state == "23505" {
                    return MusterError(.conflict, "cannot \(operation): \(message)", cause: SendableDescription(psql))
                }
                return MusterError(
                    .internal, "PostgreSQL refused to \(operation): \(message) (SQLSTATE \(state))",
                    cause: SendableDescription(psql))
            }
            let why = psql.underlying.map { String(describing: $0) } ?? psql.code.description
            return MusterError(
                .databaseUnavailable, "cannot reach PostgreSQL (\(redacted)) to \(operation): \(why)",
                hint: "check that the database server is running and reachable; Muster retries on its own",
                cause: SendableDescription(psql))
        }
        if error is CancellationError {
            return MusterError(.databaseUnavailable, "the database operation '\(operation)' was cancelled")
        }
        return MusterError(
            .databaseUnavailable, "cannot reach PostgreSQL (\(redacted)) to \(operation): \(error)",
            hint: "check that the database server is running and reachable; Muster retries on its own",
            cause: SendableDescription(error))
    }
}

/// Carries an error's debug description as a `Sendable` cause (postgres-nio errors hold non-Sendable pieces).
struct SendableDescription: Error, Sendable, CustomStringConvertible {
    let description: String
    init(_ error: any Error) { self.description = String(reflecting: error) }
}

extension PostgresConnection {
    /// Runs a statement and drains its rows (for statements whose result is not needed).
    func run(_ query: PostgresQuery, logger: Logger) async throws {
        _ = try await self.query(query, logger: logger).collect()
    }
}
