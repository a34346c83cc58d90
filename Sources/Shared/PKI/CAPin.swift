import Crypto
import Foundation

/// SHA-256 pin of a CA certificate's SubjectPublicKeyInfo (DER), as carried in join tokens.
public struct CAPin: Hashable, Sendable, CustomStringConvertible {
    /// 32 bytes.
    public let digest: [UInt8]

    public init(digest: [UInt8]) throws {
        guard digest.count == 32 else {
            throw MusterError(.tokenMalformed, "a CA pin is 32 bytes (SHA-256), got \(digest.count)")
        }
        self.digest = digest
    }

    /// Pins the given DER-encoded SubjectPublicKeyInfo.
    public init(spkiDER: [UInt8]) {
        self.digest = Array(SHA256.hash(data: spkiDER))
    }

    /// Lower-case hex, 64 characters.
    public var hex: String { digest.map { String(format: "%02x", $0) }.joined() }

    /// Parses 64 hex characters.
    public init(hex: String) throws {
        let chars = Array(hex.utf8)
        guard chars.count == 64 else {
            throw MusterError(.tokenMalformed, "a CA pin is 64 hex characters, got \(chars.count)")
        }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var i = 0
        while i < 64 {
            guard let hi = Self.nibble(chars[i]), let lo = Self.nibble(chars[i + 1]) else {
                throw MusterError(.tokenMalformed, "the CA pin contains a character that is not hex")
            }
            out.append(hi << 4 | lo)
            i += 2
        }
        try self.init(digest: out)
    }

    public var description: String { "sha256:\(hex)" }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
