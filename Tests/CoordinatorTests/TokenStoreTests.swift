import Foundation
import Shared
import Testing

@testable import Coordinator

@Suite("Join tokens (real PostgreSQL)")
struct TokenStoreTests {
    static func code(_ error: any Error) -> MusterError.Code? { (error as? MusterError)?.code }

    @Test func createListRedeemAndRevoke() async throws {
        try await TestDatabase.with { database, name in
            let logger = TestDatabase.logger
            let tokens = TokenStore(database: database, logger: logger)
            let nodes = NodeStore(database: database, heartbeats: HeartbeatBatcher(), logger: logger)
            let now = Date()
            let (token, record) = try await tokens.create(
                ttl: .seconds(3600), usesAllowed: 2, labels: ["rack": "r1"], caPin: TestDatabase.pin, now: now,
                actor: "test")
            #expect(record.status(at: now) == .active)
            // The secret is stored only as its hash.
            let stored = try TestDatabase.psql(name, "SELECT secret_hash FROM join_tokens WHERE id = '\(token.id)'")
            #expect(stored == JoinToken.secretHash(token.secret))
            #expect(!stored.contains(token.secret))

            let node = try await nodes.redeemJoinToken(
                tokenID: token.id, secret: token.secret, facts: TestDatabase.facts(), now: now)
            #expect(node.state == .joining)
            #expect(node.labels == ["rack": "r1"])
            let listed = try await tokens.list()
            #expect(listed.map(\.id) == [token.id])
            #expect(listed.first?.uses == 1)

            let revoked = try await tokens.revoke(id: token.id, now: now, actor: "test")
            #expect(revoked.status(at: now) == .revoked)
            await #expect { try await tokens.revoke(id: token.id, now: now, actor: "test") } throws: {
                Self.code($0) == .conflict
            }
            await #expect { try await tokens.revoke(id: "nosuchtokn", now: now, actor: "test") } throws: {
                Self.code($0) == .notFound
            }
            let audit = try await AuditLog.recent(on: database, logger: logger)
            #expect(audit.map(\.action) == ["token.revoke", "token.create"])
        }
    }

    @Test func eachRefusalHasItsOwnCode() async throws {
        try await TestDatabase.with { database, _ in
            let logger = TestDatabase.logger
            let tokens = TokenStore(database: database, logger: logger)
            let nodes = NodeStore(database: database, heartbeats: HeartbeatBatcher(), logger: logger)
            let now = Date()
            let facts = TestDatabase.facts()
            func redeem(_ token: JoinToken, secret: String? = nil, at: Date) async throws {
                _ = try await nodes.redeemJoinToken(
                    tokenID: token.id, secret: secret ?? token.secret, facts: facts, now: at)
            }

            // Unknown id, and a known id with the wrong secret: both "unknown".
            let unknown = JoinToken.generate(caPin: TestDatabase.pin)
            await #expect { try await redeem(unknown, at: now) } throws: { Self.code($0) == .tokenUnknown }
            let (good, _) = try await tokens.create(
                ttl: .seconds(60), usesAllowed: 1, labels: [:], caPin: TestDatabase.pin, now: now, actor: "test")
            await #expect { try await redeem(good, secret: String(repeating: "a", count: 32), at: now) } throws: {
                Self.code($0) == .tokenUnknown
            }
            // Expired.
            await #expect { try await redeem(good, at: now.addingTimeInterval(61)) } throws: {
                Self.code($0) == .tokenExpired
            }
            // Used up: the one use works, the second is refused.
            try await redeem(good, at: now)
            await #expect { try await redeem(good, at: now) } throws: { Self.code($0) == .tokenUsedUp }
            // Revoked.
            let (other, _) = try await tokens.create(
                ttl: .seconds(60), usesAllowed: nil, labels: [:], caPin: TestDatabase.pin, now: now, actor: "test")
            _ = try await tokens.revoke(id: other.id, now: now, actor: "test")
            await #expect { try await redeem(other, at: now) } throws: { Self.code($0) == .tokenRevoked }
            // A refused join creates no node and consumes nothing.
            #expect(try await nodes.list().count == 1)
        }
    }

    @Test func lastUseCannotBeTakenTwiceConcurrently() async throws {
        try await TestDatabase.with { database, _ in
            let logger = TestDatabase.logger
            let tokens = TokenStore(database: database, logger: logger)
            let nodes = NodeStore(database: database, heartbeats: HeartbeatBatcher(), logger: logger)
            let (token, _) = try await tokens.create(
                ttl: .seconds(60), usesAllowed: 1, labels: [:], caPin: TestDatabase.pin, now: Date(), actor: "t")
            let results = await withTaskGroup(of: Bool.self) { group in
                for i in 0..<4 {
                    group.addTask {
                        (try? await nodes.redeemJoinToken(
                            tokenID: token.id, secret: token.secret, facts: TestDatabase.facts("n\(i)"), now: Date()))
                            != nil
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(results.filter { $0 }.count == 1)
        }
    }

    @Test func invalidInputIsRefused() async throws {
        try await TestDatabase.with { database, _ in
            let tokens = TokenStore(database: database, logger: TestDatabase.logger)
            await #expect {
                _ = try await tokens.create(
                    ttl: .zero, usesAllowed: nil, labels: [:], caPin: TestDatabase.pin, now: Date(), actor: "t")
            } throws: { Self.code($0) == .invalidInput }
            await #expect {
                _ = try await tokens.create(
                    ttl: .seconds(5), usesAllowed: 0, labels: [:], caPin: TestDatabase.pin, now: Date(), actor: "t")
            } throws: { Self.code($0) == .invalidInput }
            await #expect {
                _ = try await tokens.create(
                    ttl: .seconds(5), usesAllowed: nil, labels: ["bad key": "x"], caPin: TestDatabase.pin, now: Date(),
                    actor: "t")
            } throws: { Self.code($0) == .invalidInput }
        }
    }
}
