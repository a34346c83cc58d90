import Foundation
import Logging
import PostgresNIO
import Shared

/// A published module version, as `muster module ls` and the admin API show it.
public struct ModuleRecord: Codable, Sendable, Equatable {
    public var name: String
    public var version: String
    public var imageDigest: String
    public var imageSize: UInt64
    public var objects: Int
    public var objectBytes: UInt64
    /// Key id of the signing key (``ModuleDescriptor/keyID(of:)``).
    public var keyID: String
    public var services: [String]
    public var publishedBy: String
    public var publishedAt: Date
}

/// `POST /v1/modules` answer: the record and whether this call published it (`false`: the identical
/// descriptor was already published, a no-op).
public struct PublishResult: Codable, Sendable, Equatable {
    public var module: ModuleRecord
    public var published: Bool
}

/// Published modules in PostgreSQL (table `modules`, migration 3). The files are in ``ModuleRepository``.
public struct ModuleStore: Sendable {
    let database: Database
    let logger: Logger

    public init(database: Database, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    private static let columns = """
        name, version, image_digest, image_size, object_count, object_bytes, key_id, (SELECT coalesce(jsonb_agg(s->>'name'), '[]'::jsonb)::text
        FROM jsonb_array_elements(coalesce(descriptor #> '{payload,manifest,services}', '[]'::jsonb)) s),
        published_by, published_at
        """

    private typealias Row = (String, String, String, Int64, Int, Int64, String, String, String, Date)

    private static func record(_ row: Row) throws -> ModuleRecord {
        ModuleRecord(
            name: row.0, version: row.1, imageDigest: row.2, imageSize: UInt64(max(0, row.3)), objects: row.4,
            objectBytes: UInt64(max(0, row.5)), keyID: row.6,
            services: try MusterJSON.decode([String].self, from: row.7), publishedBy: row.8, publishedAt: row.9)
    }

    /// Records a verified descriptor as `name@version`.
    ///
    /// - Returns: The record and whether it is new; publishing the identical image digest again is a no-op.
    /// - Throws: ``MusterError`` `.conflict` when `name@version` is already published with another image digest.
    public func publish(
        _ descriptor: ModuleDescriptor, actor: String, now: Date
    ) async throws -> PublishResult {
        let payload = descriptor.payload
        let name = payload.manifest.name
        let version = payload.manifest.version
        let digest = payload.image.digest
        let json = try MusterJSON.string(descriptor)
        let logger = self.logger
        return try await database.transaction("publish a module") { connection in
            // Serialize publishers of the same name@version, so the check below cannot race an insert.
            try await connection.run(
                "SELECT pg_advisory_xact_lock(hashtextextended(\(name + "@" + version), 0))", logger: logger)
            if let existing = try await Self.load(name: name, version: version, on: connection, logger: logger) {
                guard existing.imageDigest == digest else {
                    throw MusterError(
                        .conflict,
                        "\(name)@\(version) is already published with image sha256:\(existing.imageDigest); this "
                            + "build has image sha256:\(digest)",
                        hint: "a published version never changes: bump `version` in module.yaml and build again")
                }
                return PublishResult(module: existing, published: false)
            }
            try await connection.run(
                """
                INSERT INTO modules (name, version, image_digest, image_size, object_count, object_bytes, key_id,
                                     descriptor, published_by, published_at)
                VALUES (\(name), \(version), \(digest), \(Int64(payload.image.size)), \(payload.objects.count),
                        \(Int64(payload.totalObjectBytes)), \(descriptor.signature.keyID), \(json)::jsonb, \(actor),
                        \(now))
                """, logger: logger)
            try await AuditLog.record(
                on: connection, actor: actor, action: "module.publish", target: "\(name)@\(version)",
                details: ["image": digest], logger: logger)
            guard let record = try await Self.load(name: name, version: version, on: connection, logger: logger) else {
                throw MusterError(.internal, "the module row vanished inside its own transaction")
            }
            return PublishResult(module: record, published: true)
        }
    }

    /// Every published version, by name, newest first within a name.
    public func list() async throws -> [ModuleRecord] {
        let logger = self.logger
        return try await database.withConnection("list modules") { connection in
            let rows = try await connection.query(
                "SELECT \(unescaped: Self.columns) FROM modules ORDER BY name, published_at DESC, version",
                logger: logger)
            var out: [ModuleRecord] = []
            for try await row in rows.decode(Row.self) { out.append(try Self.record(row)) }
            return out
        }
    }

    /// `name@version`, or the newest published version of `name` when `version` is `nil`.
    ///
    /// - Throws: ``MusterError`` `.notFound` naming what is published.
    public func find(name: String, version: String?) async throws -> ModuleRecord {
        let logger = self.logger
        return try await database.withConnection("find a module") { connection in
            if let version {
                if let found = try await Self.load(name: name, version: version, on: connection, logger: logger) {
                    return found
                }
            } else {
                let rows = try await connection.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM modules WHERE name = \(name)
                    ORDER BY published_at DESC, version DESC LIMIT 1
                    """, logger: logger)
                for try await row in rows.decode(Row.self) { return try Self.record(row) }
            }
            var versions: [String] = []
            for try await v in try await connection.query(
                "SELECT version FROM modules WHERE name = \(name) ORDER BY published_at DESC", logger: logger
            ).decode(String.self) {
                versions.append(v)
            }
            let wanted = version.map { "\(name)@\($0)" } ?? name
            throw MusterError(
                .notFound, "module \(wanted) is not published",
                hint: versions.isEmpty
                    ? "publish it first: muster module publish OUT"
                    : "published versions of \(name): \(versions.joined(separator: ", "))")
        }
    }

    private static func load(
        name: String, version: String, on connection: PostgresConnection, logger: Logger
    ) async throws -> ModuleRecord? {
        let rows = try await connection.query(
            "SELECT \(unescaped: columns) FROM modules WHERE name = \(name) AND version = \(version)", logger: logger)
        for try await row in rows.decode(Row.self) { return try record(row) }
        return nil
    }
}
