import Foundation
import Logging
import PostgresNIO
import Shared

/// Join tokens in PostgreSQL (table `join_tokens`): create, list, revoke, and the checks a join runs.
///
/// The secret is stored only as ``JoinToken/secretHash(_:)``; the full token exists only in the answer to
/// ``TokenStore/create(ttl:usesAllowed:labels:caPin:now:actor:)``.
public struct TokenStore: Sendable {
    let database: Database
    let logger: Logger

    public init(database: Database, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// Creates a token and records `token.create` in the audit log.
    /// - Parameters:
    ///   - ttl: Lifetime from `now`; must be positive.
    ///   - usesAllowed: How many joins it allows; `nil` for unlimited.
    ///   - labels: Labels every node joining with it gets.
    ///   - caPin: The cluster CA's pin, embedded in the token for the agent.
    /// - Returns: The full token (with secret, shown once) and its stored record.
    /// - Throws: ``MusterError`` `.invalidInput` for a non-positive TTL or use count, `.databaseUnavailable`.
    public func create(
        ttl: Duration, usesAllowed: Int?, labels: [String: String], caPin: CAPin, now: Date, actor: String
    ) async throws -> (token: JoinToken, record: TokenRecord) {
        guard ttl > .zero else {
            throw MusterError(.invalidInput, "the token TTL must be positive", hint: "for example --ttl 24h")
        }
        if let usesAllowed, usesAllowed < 1 {
            throw MusterError(.invalidInput, "--uses must be at least 1 (leave it out for unlimited uses)")
        }
        for key in labels.keys where !NodeStore.isValidLabelKey(key) {
            throw MusterError(
                .invalidInput, "the label key '\(key)' is not valid",
                hint: "label keys use letters, digits, '.', '-', '_' and '/', 1 to 63 characters")
        }
        let token = JoinToken.generate(caPin: caPin)
        let seconds = Double(ttl.components.seconds) + Double(ttl.components.attoseconds) / 1e18
        let record = TokenRecord(
            id: token.id, createdAt: now, expiresAt: now.addingTimeInterval(seconds), usesAllowed: usesAllowed,
            uses: 0, labels: labels, revokedAt: nil)
        let hash = JoinToken.secretHash(token.secret)
        let labelsJSON = try MusterJSON.string(labels)
        let logger = self.logger
        try await database.transaction("create a join token") { connection in
            try await connection.run(
                """
                INSERT INTO join_tokens (id, secret_hash, created_at, expires_at, uses_allowed, labels)
                VALUES (\(record.id), \(hash), \(record.createdAt), \(record.expiresAt), \(record.usesAllowed),
                        \(labelsJSON)::jsonb)
                """, logger: logger
            )
            var details = ["expiresAt": MusterJSON.isoFormatter.format(record.expiresAt)]
            if let usesAllowed { details["usesAllowed"] = "\(usesAllowed)" }
            try await AuditLog.record(
                on: connection, actor: actor, action: "token.create", target: record.id, details: details,
                logger: logger)
        }
        return (token, record)
    }

    /// All tokens, newest first.
    public func list() async throws -> [TokenRecord] {
        let logger = self.logger
        return try await database.withConnection("list join tokens") { connection in
            let rows = try await connection.query(
                """
                SELECT id, created_at, expires_at, uses_allowed, uses, labels::text, revoked_at
                FROM join_tokens ORDER BY created_at DESC, id
                """, logger: logger)
            var out: [TokenRecord] = []
            for try await (id, created, expires, allowed, uses, labels, revoked) in rows.decode(
                (String, Date, Date, Int?, Int, String, Date?).self)
            {
                out.append(
                    TokenRecord(
                        id: id, createdAt: created, expiresAt: expires, usesAllowed: allowed, uses: uses,
                        labels: try MusterJSON.decode([String: String].self, from: labels), revokedAt: revoked))
            }
            return out
        }
    }

    /// Revokes a token and records `token.revoke`.
    /// - Throws: ``MusterError`` `.notFound` for an unknown id, `.conflict` when it was already revoked.
    public func revoke(id: String, now: Date, actor: String) async throws -> TokenRecord {
        let logger = self.logger
        return try await database.transaction("revoke a join token") { connection in
            guard var record = try await Self.fetch(id: id, forUpdate: true, on: connection, logger: logger) else {
                throw MusterError(
                    .notFound, "there is no join token with id '\(id)'", hint: "`muster token ls` lists the tokens")
            }
            if let revokedAt = record.revokedAt {
                throw MusterError(
                    .conflict,
                    "the join token \(id) was already revoked at \(MusterJSON.isoFormatter.format(revokedAt))")
            }
            try await connection.run(
                "UPDATE join_tokens SET revoked_at = \(now) WHERE id = \(id)", logger: logger
            )
            try await AuditLog.record(
                on: connection, actor: actor, action: "token.revoke", target: id, logger: logger)
            record.revokedAt = now
            return record
        }
    }

    /// Checks `secret` against token `id` and consumes one use, on `connection` inside the caller's transaction
    /// (the row is locked until it commits, so two joins cannot both take the last use).
    /// - Returns: The token record after the use.
    /// - Throws: ``MusterError`` `.tokenUnknown`, `.tokenRevoked`, `.tokenExpired` or `.tokenUsedUp`.
    static func redeem(
        id: String, secret: String, now: Date, on connection: PostgresConnection, logger: Logger
    ) async throws -> TokenRecord {
        let rows = try await connection.query(
            "SELECT secret_hash FROM join_tokens WHERE id = \(id) FOR UPDATE", logger: logger)
        var storedHash: String?
        for try await hash in rows.decode(String.self) { storedHash = hash }
        guard let storedHash, var record = try await fetch(id: id, forUpdate: false, on: connection, logger: logger)
        else {
            throw MusterError(
                .tokenUnknown, "the join token \(id) is not known to this coordinator",
                hint: "create a token with `muster token create` on this coordinator and copy it whole")
        }
        try record.checkRedeemable(secretHash: JoinToken.secretHash(secret), storedHash: storedHash, now: now)
        try await connection.run("UPDATE join_tokens SET uses = uses + 1 WHERE id = \(id)", logger: logger)
        record.uses += 1
        return record
    }

    static func fetch(
        id: String, forUpdate: Bool, on connection: PostgresConnection, logger: Logger
    ) async throws -> TokenRecord? {
        let query: PostgresQuery =
            forUpdate
            ? """
            SELECT id, created_at, expires_at, uses_allowed, uses, labels::text, revoked_at
            FROM join_tokens WHERE id = \(id) FOR UPDATE
            """
            : """
            SELECT id, created_at, expires_at, uses_allowed, uses, labels::text, revoked_at
            FROM join_tokens WHERE id = \(id)
            """
        let rows = try await connection.query(query, logger: logger)
        for try await (id, created, expires, allowed, uses, labels, revoked) in rows.decode(
            (String, Date, Date, Int?, Int, String, Date?).self)
        {
            return TokenRecord(
                id: id, createdAt: created, expiresAt: expires, usesAllowed: allowed, uses: uses,
                labels: try MusterJSON.decode([String: String].self, from: labels), revokedAt: revoked)
        }
        return nil
    }
}
