import Foundation
import Shared

/// JSON coding for the store's `jsonb` columns and for the admin API: sorted keys, ISO-8601 dates with
/// fractional seconds (so a heartbeat time survives a round trip to the millisecond).
public enum MusterJSON {
    /// An encoder with sorted keys and ISO-8601 dates.
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(isoFormatter.format(date))
        }
        return encoder
    }

    /// A decoder accepting ISO-8601 dates with or without fractional seconds.
    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            if let date = try? isoFormatter.parse(text) { return date }
            if let date = try? Date.ISO8601FormatStyle().parse(text) { return date }
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an ISO-8601 date: \(text)")
        }
        return decoder
    }

    static let isoFormatter = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// Encodes a value as a JSON string (for binding to a `jsonb` parameter).
    static func string<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder().encode(value), as: UTF8.self)
    }

    /// Decodes a JSON string read from a `jsonb` column (selected as `::text`).
    static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try decoder().decode(type, from: Data(text.utf8))
    }
}

/// A node as the admin API and `muster nodes` show it: the store's ``NodeRecord`` plus where its session comes
/// from. Flat so that `--json` reads well.
public struct NodeView: Codable, Sendable, Equatable {
    public var id: UUID
    public var hostname: String
    public var state: NodeState
    /// Remote address of the node's latest session, if it ever held one.
    public var address: String?
    public var agentVersion: String
    public var labels: [String: String]
    public var joinedAt: Date
    public var lastSeen: Date?
    public var facts: HostFacts
    public var lastReport: HealthReport?

    public init(record: NodeRecord, address: String?) {
        self.id = record.id
        self.hostname = record.facts.hostname
        self.state = record.state
        self.address = address
        self.agentVersion = record.lastReport?.agentVersion ?? record.facts.agentVersion
        self.labels = record.labels
        self.joinedAt = record.joinedAt
        self.lastSeen = record.lastSeen
        self.facts = record.facts
        self.lastReport = record.lastReport
    }

    private enum CodingKeys: String, CodingKey {
        case id, hostname, state, address, agentVersion, labels, joinedAt, lastSeen, facts, lastReport
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let idText = try c.decode(String.self, forKey: .id)
        guard let id = UUID(uuidString: idText) else {
            throw DecodingError.dataCorruptedError(forKey: .id, in: c, debugDescription: "not a UUID: \(idText)")
        }
        self.id = id
        hostname = try c.decode(String.self, forKey: .hostname)
        state = try c.decode(NodeState.self, forKey: .state)
        address = try c.decodeIfPresent(String.self, forKey: .address)
        agentVersion = try c.decode(String.self, forKey: .agentVersion)
        labels = try c.decode([String: String].self, forKey: .labels)
        joinedAt = try c.decode(Date.self, forKey: .joinedAt)
        lastSeen = try c.decodeIfPresent(Date.self, forKey: .lastSeen)
        facts = try c.decode(HostFacts.self, forKey: .facts)
        lastReport = try c.decodeIfPresent(HealthReport.self, forKey: .lastReport)
    }

    /// Encodes the id in lower case, as the agent writes it (`identity/node-id`) and the table shows it.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id.uuidString.lowercased(), forKey: .id)
        try c.encode(hostname, forKey: .hostname)
        try c.encode(state, forKey: .state)
        try c.encode(address, forKey: .address)
        try c.encode(agentVersion, forKey: .agentVersion)
        try c.encode(labels, forKey: .labels)
        try c.encode(joinedAt, forKey: .joinedAt)
        try c.encode(lastSeen, forKey: .lastSeen)
        try c.encode(facts, forKey: .facts)
        try c.encode(lastReport, forKey: .lastReport)
    }
}

/// A join token as stored (the secret only as its hash, never shown).
public struct TokenRecord: Codable, Sendable, Equatable {
    /// Whether the token can still be redeemed, and if not why.
    public enum Status: String, Codable, Sendable {
        case active
        case expired
        case usedUp = "used-up"
        case revoked
    }

    public var id: String
    public var createdAt: Date
    public var expiresAt: Date
    /// `nil` means unlimited.
    public var usesAllowed: Int?
    public var uses: Int
    public var labels: [String: String]
    public var revokedAt: Date?

    public init(
        id: String, createdAt: Date, expiresAt: Date, usesAllowed: Int?, uses: Int, labels: [String: String],
        revokedAt: Date?
    ) {
        self.id = id
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usesAllowed = usesAllowed
        self.uses = uses
        self.labels = labels
        self.revokedAt = revokedAt
    }

    /// The token's status at `now`. Revocation wins over expiry, expiry over use count.
    public func status(at now: Date) -> Status {
        if revokedAt != nil { return .revoked }
        if now >= expiresAt { return .expired }
        if let usesAllowed, uses >= usesAllowed { return .usedUp }
        return .active
    }

    /// Checks that a join attempt with `secretHash` may redeem this token at `now`.
    /// - Throws: ``MusterError`` `.tokenUnknown` (wrong secret: said the same way as an unknown id, so the id alone
    ///   reveals nothing), `.tokenRevoked`, `.tokenExpired` or `.tokenUsedUp`, each with what to do.
    public func checkRedeemable(secretHash: String, storedHash: String, now: Date) throws {
        guard Self.constantTimeEqual(secretHash, storedHash) else {
            throw MusterError(
                .tokenUnknown, "the join token \(id) is not known to this coordinator",
                hint: "create a token with `muster token create` on this coordinator and copy it whole")
        }
        switch status(at: now) {
        case .active: return
        case .revoked:
            throw MusterError(
                .tokenRevoked, "the join token \(id) was revoked",
                hint: "create a new token with `muster token create`")
        case .expired:
            throw MusterError(
                .tokenExpired,
                "the join token \(id) expired at \(MusterJSON.isoFormatter.format(expiresAt))",
                hint: "create a new token with `muster token create --ttl …`")
        case .usedUp:
            throw MusterError(
                .tokenUsedUp, "the join token \(id) was already used \(uses) of \(usesAllowed ?? uses) times",
                hint: "create a new token, or one with more uses: `muster token create --uses N`")
        }
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<x.count { diff |= x[i] ^ y[i] }
        return diff == 0
    }
}

/// One line of the admin audit log.
public struct AuditEntry: Codable, Sendable, Equatable {
    public var id: Int
    public var at: Date
    public var actor: String
    public var action: String
    public var target: String?
    public var details: [String: String]
}
