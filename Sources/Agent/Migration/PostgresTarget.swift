import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Shared

/// The target database: a `postgres://user[:password]@host[:port]/database[?sslmode=disable]` URL and the
/// connections the migration opens to it.
struct PostgresTarget: Sendable {
    var host: String
    var port: Int
    var user: String
    var password: String?
    var database: String

    /// Parses a `postgres://` or `postgresql://` URL. Only `sslmode=disable` (the default here) is supported.
    init(url: String) throws(MusterError) {
        guard let comps = URLComponents(string: url), comps.scheme == "postgres" || comps.scheme == "postgresql",
            let host = comps.host, !host.isEmpty
        else {
            throw MusterError(.usage, "--target must be a postgres://user@host:port/database URL")
        }
        self.host = host
        self.port = comps.port ?? 5432
        self.user = comps.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        self.password = comps.password.flatMap { $0.removingPercentEncoding }
        let db = String(comps.path.drop(while: { $0 == "/" }))
        self.database = db.isEmpty ? self.user : (db.removingPercentEncoding ?? db)
        if let mode = comps.queryItems?.first(where: { $0.name == "sslmode" })?.value,
            mode != "disable", mode != "prefer", mode != "allow"
        {
            throw MusterError(.usage, "sslmode=\(mode) is not supported by migrate-sqlite yet; use sslmode=disable")
        }
    }

    /// `host:port/database` for messages (never the password).
    var display: String { "\(host):\(port)/\(database)" }

    /// Opens a connection set up for the migration (UTC, ISO dates, UTF-8).
    func connect(logger: Logger) async throws(MusterError) -> PostgresConnection {
        var config = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: .disable)
        config.options.connectTimeout = .seconds(10)
        config.options.additionalStartupParameters = [
            ("TimeZone", "UTC"), ("DateStyle", "ISO, YMD"), ("client_encoding", "UTF8"),
            ("extra_float_digits", "1"), ("application_name", "muster-migrate-sqlite"),
        ]
        do {
            return try await PostgresConnection.connect(
                on: MultiThreadedEventLoopGroup.singleton.any(), configuration: config,
                id: Int.random(in: 1...Int(Int32.max)), logger: logger)
        } catch {
            throw MusterError(
                .connectionFailed, "cannot connect to PostgreSQL at \(display): \(Self.describe(error))",
                hint: "check that the server is running and the URL, user and password are right", cause: error)
        }
    }

    /// A short, password-free description of a postgres-nio error.
    static func describe(_ error: any Error) -> String {
        if let e = error as? PSQLError {
            if let msg = e.serverInfo?[.message] {
                let state = e.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return msg + state
            }
            if let underlying = e.underlying { return "\(e.code): \(underlying)" }
            return "\(e.code)"
        }
        return "\(error)"
    }

    /// Whether an error means the connection or server went away (restart, network), as opposed to a SQL error.
    static func isConnectionLoss(_ error: any Error) -> Bool {
        if error is TableCopier.ConnectionClosedDuringCopy { return true }
        guard let e = error as? PSQLError else { return error is ChannelError || error is IOError }
        if let state = e.serverInfo?[.sqlState] {
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection exceptions.
            return state.hasPrefix("57P") || state.hasPrefix("08")
        }
        return e.code == .serverClosedConnection || e.code == .connectionError || e.code == .uncleanShutdown
            || e.code == .clientClosedConnection
    }
}

extension PostgresConnection {
    /// Runs one statement whose text we built ourselves (identifiers quoted with ``pgQuote(_:)``).
    func run(_ sql: String, logger: Logger) async throws {
        try await query(PostgresQuery(unsafeSQL: sql), logger: logger).consume()
    }

    /// Runs a query and returns every row's columns as optional strings (small result sets only).
    func strings(_ sql: String, logger: Logger) async throws -> [[String?]] {
        var out: [[String?]] = []
        for try await row in try await query(PostgresQuery(unsafeSQL: sql), logger: logger) {
            var cols: [String?] = []
            for cell in row {
                cols.append(try cell.decode(String?.self))
            }
            out.append(cols)
        }
        return out
    }
}

extension PostgresRowSequence {
    /// Drains the rows of a statement that returns none (or whose rows we ignore).
    func consume() async throws {
        for try await _ in self {}
    }
}

/// Quotes a PostgreSQL identifier, keeping its case: `"My ""Table"""`.
func pgQuote(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

/// Quotes a PostgreSQL string literal: `'it''s'`.
func pgLiteral(_ s: String) -> String {
    "'" + s.replacingOccurrences(of: "'", with: "''") + "'"
}
