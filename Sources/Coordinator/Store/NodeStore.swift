import Foundation
import Logging
import PostgresNIO
import Shared

/// Nodes in PostgreSQL (tables `nodes` and `certificates`): the ``NodeDirectory`` the agent listener uses, plus
/// listing, showing and forgetting for the admin API.
///
/// Heartbeats do not touch the database here; they go to ``HeartbeatBatcher`` and are written by
/// ``HeartbeatFlusher``.
public struct NodeStore: NodeDirectory {
    let database: Database
    /// Heartbeats waiting for the next flush.
    public let heartbeats: HeartbeatBatcher
    let logger: Logger

    public init(database: Database, heartbeats: HeartbeatBatcher, logger: Logger) {
        self.database = database
        self.heartbeats = heartbeats
        self.logger = logger
    }

    // MARK: - NodeDirectory

    public func redeemJoinToken(tokenID: String, secret: String, facts: HostFacts, now: Date) async throws
        -> NodeRecord
    {
        let logger = self.logger
        return try await database.transaction("redeem a join token") { connection in
            let token = try await TokenStore.redeem(id: tokenID, secret: secret, now: now, on: connection, logger: logger)
            let record = NodeRecord(
                id: UUID(), state: .joining, facts: facts, labels: token.labels, joinedAt: now)
            let factsJSON = try MusterJSON.string(facts)
            let labelsJSON = try MusterJSON.string(token.labels)
            try await connection.run(
                """
                INSERT INTO nodes (id, hostname, state, facts, labels, agent_version, token_id, joined_at)
                VALUES (\(record.id), \(facts.hostname), \(record.state.rawValue), \(factsJSON)::jsonb,
                        \(labelsJSON)::jsonb, \(facts.agentVersion), \(tokenID), \(now))
                """, logger: logger
            )
            return record
        }
    }

    public func recordCertificate(nodeID: UUID, serial: String, notAfter: Date, pem: String) async throws {
        let logger = self.logger
        try await database.withConnection("record a node certificate") { connection in
            try await connection.run(
                """
                INSERT INTO certificates (serial, node_id, not_after, pem) VALUES (\(serial), \(nodeID), \(notAfter), \(pem))
                ON CONFLICT (serial) DO NOTHING
                """, logger: logger
            )
        }
    }

    public func admission(of nodeID: UUID) async throws -> NodeAdmission {
        let logger = self.logger
        return try await database.withConnection("check a node's admission") { connection in
            let rows = try await connection.query("SELECT state FROM nodes WHERE id = \(nodeID)", logger: logger)
            for try await state in rows.decode(String.self) {
                return state == NodeState.forgotten.rawValue ? .forgotten : .admitted
            }
            return .unknown
        }
    }

    public func sessionOpened(nodeID: UUID, at: Date) async throws {
        try await sessionOpened(nodeID: nodeID, at: at, address: nil)
    }

    /// A session was established from `address`: the node becomes `ready` and its address is remembered.
    /// - Throws: ``MusterError`` `.nodeForgotten` for a forgotten node, `.notFound` for an unknown one.
    public func sessionOpened(nodeID: UUID, at: Date, address: String?) async throws {
        let logger = self.logger
        try await database.withConnection("mark a node ready") { connection in
            let rows = try await connection.query(
                """
                UPDATE nodes SET state = 'ready', last_seen = GREATEST(last_seen, \(at)),
                                 address = COALESCE(\(address), address)
                WHERE id = \(nodeID) AND state <> 'forgotten'
                RETURNING id
                """, logger: logger)
            for try await _ in rows.decode(UUID.self) { return }
            let exists = try await connection.query("SELECT state FROM nodes WHERE id = \(nodeID)", logger: logger)
            for try await _ in exists.decode(String.self) {
                throw MusterError(
                    .nodeForgotten, "node \(nodeID) was forgotten and may not reconnect",
                    hint: "join the host again with a new token (`muster token create`)")
            }
            throw MusterError(.notFound, "node \(nodeID) is not known to this coordinator")
        }
    }

    public func enqueueHeartbeat(nodeID: UUID, report: HealthReport, receivedAt: Date) {
        heartbeats.enqueue(nodeID: nodeID, report: report, receivedAt: receivedAt)
    }

    // MARK: - Admin

    /// All nodes ordered by hostname; forgotten ones only with `includeForgotten`.
    public func list(includeForgotten: Bool = false) async throws -> [NodeView] {
        let logger = self.logger
        return try await database.withConnection("list nodes") { connection in
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.columns) FROM nodes
                WHERE \(includeForgotten) OR state <> 'forgotten'
                ORDER BY hostname, joined_at
                """, logger: logger)
            var out: [NodeView] = []
            for try await row in rows.decode(Self.RowType.self) { out.append(try Self.view(from: row)) }
            return out
        }
    }

    /// One node.
    /// - Throws: ``MusterError`` `.notFound`.
    public func show(id: UUID) async throws -> NodeView {
        let logger = self.logger
        return try await database.withConnection("show a node") { connection in
            let rows = try await connection.query(
                "SELECT \(unescaped: Self.columns) FROM nodes WHERE id = \(id)", logger: logger)
            for try await row in rows.decode(Self.RowType.self) { return try Self.view(from: row) }
            throw Self.notFound(id)
        }
    }

    /// Forgets a node: state `forgotten`, every certificate of it revoked, `node.forget` in the audit log. The
    /// agent listener then refuses its sessions through ``admission(of:)``.
    /// - Throws: ``MusterError`` `.notFound`, or `.conflict` when it was already forgotten.
    public func forget(id: UUID, now: Date, actor: String) async throws -> NodeView {
        let logger = self.logger
        let view = try await database.transaction("forget a node") { connection in
            let rows = try await connection.query(
                "SELECT \(unescaped: Self.columns) FROM nodes WHERE id = \(id) FOR UPDATE", logger: logger)
            var found: NodeView?
            for try await row in rows.decode(Self.RowType.self) { found = try Self.view(from: row) }
            guard var view = found else { throw Self.notFound(id) }
            if view.state == .forgotten {
                throw MusterError(.conflict, "node \(id) (\(view.hostname)) is already forgotten")
            }
            try await connection.run(
                "UPDATE nodes SET state = 'forgotten', forgotten_at = \(now) WHERE id = \(id)", logger: logger
            )
            let revoked = try await connection.query(
                """
                UPDATE certificates SET revoked_at = \(now) WHERE node_id = \(id) AND revoked_at IS NULL RETURNING serial
                """, logger: logger)
            var serials: [String] = []
            for try await serial in revoked.decode(String.self) { serials.append(serial) }
            try await AuditLog.record(
                on: connection, actor: actor, action: "node.forget", target: id.uuidString.lowercased(),
                details: ["hostname": view.hostname, "revokedCertificates": serials.sorted().joined(separator: ",")],
                logger: logger)
            view.state = .forgotten
            return view
        }
        heartbeats.discard(nodeID: id)
        return view
    }

    /// Serials of a node's certificates that are revoked.
    public func revokedCertificateSerials(nodeID: UUID) async throws -> [String] {
        let logger = self.logger
        return try await database.withConnection("read revoked certificates") { connection in
            let rows = try await connection.query(
                "SELECT serial FROM certificates WHERE node_id = \(nodeID) AND revoked_at IS NOT NULL ORDER BY serial",
                logger: logger)
            var out: [String] = []
            for try await serial in rows.decode(String.self) { out.append(serial) }
            return out
        }
    }

    /// Whether a label key is acceptable (letters, digits, `.`, `-`, `_`, `/`; 1–63 characters).
    static func isValidLabelKey(_ key: String) -> Bool {
        (1...63).contains(key.count)
            && key.unicodeScalars.allSatisfy { scalar in
                scalar.isASCII
                    && (CharacterSet.alphanumerics.contains(scalar) || "._-/".unicodeScalars.contains(scalar))
            }
    }

    // MARK: - Rows

    private typealias RowType = (UUID, String, String, String, String?, Date, Date?, String?)
    private static let columns =
        "id, state, facts::text, labels::text, address, joined_at, last_seen, last_report::text"

    private static func view(from row: RowType) throws -> NodeView {
        let (id, stateText, factsJSON, labelsJSON, address, joinedAt, lastSeen, reportJSON) = row
        guard let state = NodeState(rawValue: stateText) else {
            throw MusterError(.internal, "node \(id) has an unknown state '\(stateText)' in the database")
        }
        let record = NodeRecord(
            id: id, state: state, facts: try MusterJSON.decode(HostFacts.self, from: factsJSON),
            labels: try MusterJSON.decode([String: String].self, from: labelsJSON), joinedAt: joinedAt,
            lastSeen: lastSeen, lastReport: try reportJSON.map { try MusterJSON.decode(HealthReport.self, from: $0) })
        return NodeView(record: record, address: address)
    }

    private static func notFound(_ id: UUID) -> MusterError {
        MusterError(.notFound, "there is no node with id \(id)", hint: "`muster nodes` lists the nodes")
    }
}
