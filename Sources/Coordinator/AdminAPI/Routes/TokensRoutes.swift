import Foundation
import Hummingbird
import Shared

/// `POST /v1/tokens` body.
public struct CreateTokenRequest: Codable, Sendable, Equatable {
    public var ttlSeconds: Double
    /// `nil` for unlimited uses.
    public var uses: Int?
    public var labels: [String: String]

    public init(ttlSeconds: Double, uses: Int?, labels: [String: String]) {
        self.ttlSeconds = ttlSeconds
        self.uses = uses
        self.labels = labels
    }
}

/// `POST /v1/tokens` answer: the only time the full token is shown.
public struct CreatedToken: Codable, Sendable, Equatable {
    public var id: String
    public var token: String
    public var joinCommand: String
    public var createdAt: Date
    public var expiresAt: Date
    public var usesAllowed: Int?
    public var labels: [String: String]
}

/// A token in listings, with its status.
public struct TokenView: Codable, Sendable, Equatable {
    public var id: String
    public var status: TokenRecord.Status
    public var createdAt: Date
    public var expiresAt: Date
    public var usesAllowed: Int?
    public var uses: Int
    public var labels: [String: String]
    public var revokedAt: Date?

    init(_ record: TokenRecord, now: Date) {
        id = record.id
        status = record.status(at: now)
        createdAt = record.createdAt
        expiresAt = record.expiresAt
        usesAllowed = record.usesAllowed
        uses = record.uses
        labels = record.labels
        revokedAt = record.revokedAt
    }
}

/// `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{id}`.
struct TokensRoutes {
    let dependencies: AdminDependencies

    func register(on group: RouterGroup<AdminRequestContext>) {
        group.post("tokens") { request, context -> Response in
            let body = try await request.body.collect(upTo: 64 * 1024)
            let input: CreateTokenRequest
            do {
                input = try MusterJSON.decoder().decode(CreateTokenRequest.self, from: Data(body.readableBytesView))
            } catch {
                throw MusterError(
                    .invalidInput, "the request body is not a token request: \(error)",
                    hint: #"send {"ttlSeconds": 86400, "uses": 1, "labels": {}}"#)
            }
            guard input.ttlSeconds.isFinite, input.ttlSeconds > 0, input.ttlSeconds <= 366 * 86400 else {
                throw MusterError(.invalidInput, "the token TTL must be between 1 second and 366 days")
            }
            let now = dependencies.now()
            let (token, record) = try await dependencies.tokens.create(
                ttl: .milliseconds(Int64(input.ttlSeconds * 1000)), usesAllowed: input.uses, labels: input.labels,
                caPin: dependencies.caPin, now: now, actor: context.actor ?? "unknown")
            let address = await dependencies.joinAddress()
            return try .json(
                CreatedToken(
                    id: token.id, token: token.encoded,
                    joinCommand: "muster-agent join --coordinator \(address) --token \(token.encoded)",
                    createdAt: record.createdAt, expiresAt: record.expiresAt, usesAllowed: record.usesAllowed,
                    labels: record.labels),
                status: .created)
        }
        group.get("tokens") { _, _ -> Response in
            let now = dependencies.now()
            return try .json(try await dependencies.tokens.list().map { TokenView($0, now: now) })
        }
        group.delete("tokens/{id}") { _, context -> Response in
            let id = try context.parameters.require("id")
            let record = try await dependencies.tokens.revoke(
                id: id, now: dependencies.now(), actor: context.actor ?? "unknown")
            return try .json(TokenView(record, now: dependencies.now()))
        }
    }
}
