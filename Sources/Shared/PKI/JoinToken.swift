import Crypto
import Foundation

/// A join token: `mst1.<id>.<secret>.<ca-pin-hex>`.
///
/// The id is public (shown by `muster token ls`, used to revoke); the secret is stored at the coordinator
/// only as its SHA-256 (``JoinToken/secretHash``); the CA pin lets the agent check the coordinator before it
/// sends the secret. `description` shows the id only, never the secret.
public struct JoinToken: Sendable, Equatable, CustomStringConvertible {
    public static let prefix = "mst1"
    /// 10 characters from `[a-z0-9]`.
    public var id: String
    /// 32 characters from `[a-z0-9]` (about 165 bits).
    public var secret: String
    public var caPin: CAPin

    public init(id: String, secret: String, caPin: CAPin) {
        self.id = id
        self.secret = secret
        self.caPin = caPin
    }

    /// A new token with random id and secret.
    public static func generate(caPin: CAPin) -> JoinToken {
        JoinToken(id: randomString(count: 10), secret: randomString(count: 32), caPin: caPin)
    }

    /// The full token to hand to `muster-agent join --token`.
    public var encoded: String { "\(Self.prefix).\(id).\(secret).\(caPin.hex)" }

    /// Parses an encoded token, with a precise error for each malformation.
    public init(parsing text: String) throws {
        let parts = text.trimmingWhitespace().split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else {
            throw MusterError(
                .tokenMalformed,
                "the join token must have 4 dot-separated parts (mst1.ID.SECRET.PIN), got \(parts.count)",
                hint: "copy the whole token printed by `muster token create`")
        }
        guard parts[0] == Self.prefix else {
            throw MusterError(.tokenMalformed, "the join token must start with '\(Self.prefix).'")
        }
        let id = String(parts[1])
        let secret = String(parts[2])
        guard id.count == 10, Self.isTokenAlphabet(id) else {
            throw MusterError(.tokenMalformed, "the join token id must be 10 characters from [a-z0-9]")
        }
        guard secret.count == 32, Self.isTokenAlphabet(secret) else {
            throw MusterError(.tokenMalformed, "the join token secret must be 32 characters from [a-z0-9]")
        }
        self.init(id: id, secret: secret, caPin: try CAPin(hex: String(parts[3])))
    }

    /// SHA-256 of the secret, lower-case hex: what the coordinator stores.
    public static func secretHash(_ secret: String) -> String {
        SHA256.hash(data: Array(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    public var description: String { "JoinToken(id: \(id), ca: \(caPin))" }

    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")

    private static func isTokenAlphabet(_ s: String) -> Bool {
        s.allSatisfy { ch in alphabet.contains(ch) }
    }

    private static func randomString(count: Int) -> String {
        var rng = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in alphabet[Int(rng.next(upperBound: UInt32(alphabet.count)))] })
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return s
    }
}
