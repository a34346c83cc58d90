import Shared
import Testing

@Suite("Join tokens and CA pins")
struct JoinTokenTests {
    static let pin = CAPin(spkiDER: Array("ca".utf8))

    @Test func generatedTokenRoundTrips() throws {
        let token = JoinToken.generate(caPin: Self.pin)
        let parsed = try JoinToken(parsing: "  \(token.encoded)\n")
        #expect(parsed == token)
        #expect(!token.description.contains(token.secret))
        #expect(JoinToken.secretHash(token.secret).count == 64)
    }

    @Test(arguments: [
        ("mst1.abc", "4 dot-separated parts"),
        ("mst2.abcdefghij.\(String(repeating: "a", count: 32)).\(pin.hex)", "must start with"),
        ("mst1.ABCDEFGHIJ.\(String(repeating: "a", count: 32)).\(pin.hex)", "id must be"),
        ("mst1.abcdefghij.short.\(pin.hex)", "secret must be"),
        ("mst1.abcdefghij.\(String(repeating: "a", count: 32)).abc", "64 hex"),
        ("mst1.abcdefghij.\(String(repeating: "a", count: 32)).\(String(repeating: "z", count: 64))", "not hex"),
    ])
    func malformedTokensHavePreciseErrors(_ text: String, _ expected: String) {
        #expect {
            _ = try JoinToken(parsing: text)
        } throws: { error in
            guard let error = error as? MusterError else { return false }
            return error.code == .tokenMalformed && error.message.contains(expected)
        }
    }

    @Test func pinHexRoundTrip() throws {
        #expect(try CAPin(hex: Self.pin.hex) == Self.pin)
        #expect(try CAPin(hex: Self.pin.hex.uppercased()) == Self.pin)
        #expect { try CAPin(digest: [1, 2, 3]) } throws: { ($0 as? MusterError)?.code == .tokenMalformed }
    }
}
