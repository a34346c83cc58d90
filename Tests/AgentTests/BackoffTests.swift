import Testing

@testable import Agent

@Suite("Backoff (exponential, full jitter)")
struct BackoffTests {
    let backoff = Backoff(base: .milliseconds(500), cap: .seconds(30))

    @Test func ceilingDoublesUntilTheCap() {
        #expect(backoff.ceiling(attempt: 0) == .milliseconds(500))
        #expect(backoff.ceiling(attempt: 1) == .seconds(1))
        #expect(backoff.ceiling(attempt: 3) == .seconds(4))
        #expect(backoff.ceiling(attempt: 6) == .seconds(30))
        #expect(backoff.ceiling(attempt: 1000) == .seconds(30))
        #expect(backoff.ceiling(attempt: -1) == .milliseconds(500))
    }

    @Test func fullJitterSpansZeroToCeiling() {
        #expect(backoff.delay(attempt: 3, unitRandom: 0) == .zero)
        #expect(backoff.delay(attempt: 3, unitRandom: 1) == .seconds(4))
        #expect(backoff.delay(attempt: 3, unitRandom: 0.5) == .seconds(2))
        // Out-of-range randomness is clamped.
        #expect(backoff.delay(attempt: 3, unitRandom: 7) == .seconds(4))
        #expect(backoff.delay(attempt: 3, unitRandom: -1) == .zero)
    }
}
