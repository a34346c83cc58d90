import Foundation
import Logging
import PostgresNIO

/// The audit log of admin actions (table `audit_log`). Entries are written in the same transaction as the
/// change they describe, so a change without its entry cannot happen.
public enum AuditLog {
    /// Appends an entry on `connection` (call inside the change's transaction).
    /// - Parameters:
    ///   - actor: Who did it: the admin certificate's subject, or `"local"` for in-process callers.
    ///   - action: A dotted verb, e.g. `token.create`, `token.revoke`, `node.forget`.
    ///   - target: The id acted on.
    ///   - details: Extra facts (never a secret).
    static func record(
        on connection: PostgresConnection, actor: String, action: String, target: String?,
        details: [String: String] = [:], logger: Logger
    ) async throws {
        let json = try MusterJSON.string(details)
        try await connection.run(
            """
            INSERT INTO audit_log (actor, action, target, details) VALUES (\(actor), \(action), \(target), \(json)::jsonb)
            """, logger: logger
        )
    }

    /// The newest `limit` entries, newest first.
    public static func recent(on database: Database, limit: Int = 100, logger: Logger) async throws -> [AuditEntry] {
        try await database.withConnection("read the audit log") { connection in
            let rows = try await connection.query(
                """
                SELECT id, at, actor, action, target, details::text FROM audit_log ORDER BY id DESC LIMIT \(limit)
                """, logger: logger)
            var out: [AuditEntry] = []
            for try await (id, at, actor, action, target, details) in rows.decode(
                (Int, Date, String, String, String?, String).self)
            {
                out.append(
                    AuditEntry(
                        id: id, at: at, actor: actor, action: action, target: target,
                        details: try MusterJSON.decode([String: String].self, from: details)))
            }
            return out
        }
    }
}
