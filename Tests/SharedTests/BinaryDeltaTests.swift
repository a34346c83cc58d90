import Crypto
import Shared
import Testing

@Suite("BinaryDelta: make, apply and hostile deltas")
struct BinaryDeltaTests {
    /// Deterministic pseudo-random bytes (xorshift).
    struct Generator {
        var state: UInt64

        init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }

        mutating func bytes(_ count: Int) -> [UInt8] {
            (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) }
        }

        mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(max(1, bound))) }
    }

    static func roundTrip(_ base: [UInt8], _ target: [UInt8]) throws -> [UInt8] {
        let delta = BinaryDelta.make(base: base, target: target)
        let rebuilt = try BinaryDelta.apply(delta, base: base, maximumTargetLength: target.count)
        #expect(rebuilt == target)
        return delta
    }

    /// Overhead of the header: magic, two varint lengths, two sha256.
    static let headerBytes = 5 + 2 * 4 + 64

    // MARK: - Round trips

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func randomEditsRoundTripAndStaySmall(seed: UInt64) throws {
        var random = Generator(seed: seed)
        let base = random.bytes(50_000 + random.below(200_000))
        var target = base
        var changed = 0
        for _ in 0..<(1 + random.below(20)) {
            let at = random.below(target.count)
            let length = 1 + random.below(300)
            switch random.below(3) {
            case 0:  // insert
                target.insert(contentsOf: random.bytes(length), at: at)
            case 1:  // delete
                target.removeSubrange(at..<min(target.count, at + length))
            default:  // replace, same length
                let end = min(target.count, at + length)
                target.replaceSubrange(at..<end, with: random.bytes(end - at))
            }
            changed += length
        }
        let delta = try Self.roundTrip(base, target)
        // Each edit costs its bytes, two operations and at most a block of unmatched bytes on either side.
        #expect(delta.count < Self.headerBytes + changed + 21 * (2 * BinaryDelta.blockSize + 24))
    }

    @Test func identicalFilesAreOneCopy() throws {
        var random = Generator(seed: 42)
        let base = random.bytes(1 << 20)
        let delta = try Self.roundTrip(base, base)
        #expect(delta.count <= Self.headerBytes + 1 + 2 * 10)
    }

    @Test func emptyBaseEmptyTargetAndTinyFiles() throws {
        var random = Generator(seed: 7)
        let some = random.bytes(10_000)
        _ = try Self.roundTrip([], some)
        _ = try Self.roundTrip(some, [])
        _ = try Self.roundTrip([], [])
        _ = try Self.roundTrip([1, 2, 3], [3, 2, 1])
        _ = try Self.roundTrip(some, Array(some[0..<BinaryDelta.blockSize]))
    }

    @Test func unrelatedFilesCostAboutTheTarget() throws {
        var random = Generator(seed: 9)
        let base = random.bytes(100_000)
        let target = random.bytes(100_000)
        let delta = try Self.roundTrip(base, target)
        #expect(delta.count <= Self.headerBytes + target.count + 8)
    }

    @Test func movedAndRepeatedBlocksAreCopied() throws {
        var random = Generator(seed: 11)
        let a = random.bytes(40_000)
        let b = random.bytes(40_000)
        let zeros = [UInt8](repeating: 0, count: 30_000)
        // Swapped halves, a run of zeros in the middle: everything is in the base.
        let delta = try Self.roundTrip(a + zeros + b, b + zeros + a + a)
        #expect(delta.count < Self.headerBytes + 200)
    }

    @Test func anEditInRepetitiveDataKeepsToTheDiagonal() throws {
        // Periodic bytes: the edit's replacement also occurs elsewhere in the base, so short matches from there
        // cover it; the rest of the file must still be one copy on the original diagonal.
        let base = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ ($0 >> 9)) }
        var target = base
        target.replaceSubrange(50_000..<50_100, with: base[1_000..<1_100])
        let delta = try Self.roundTrip(base, target)
        #expect(delta.count < Self.headerBytes + 200)
    }

    // MARK: - Hostile deltas

    static func sample() -> (base: [UInt8], target: [UInt8], delta: [UInt8]) {
        var random = Generator(seed: 5)
        let base = random.bytes(4096)
        var target = base
        target.replaceSubrange(1000..<1100, with: random.bytes(100))
        return (base, target, BinaryDelta.make(base: base, target: target))
    }

    /// A delta with the sample's header and the given operations.
    static func forged(_ operations: [UInt8], targetLength: Int? = nil, target: [UInt8]? = nil) -> [UInt8] {
        let (base, sampleTarget, _) = sample()
        let target = target ?? sampleTarget
        var out = Array("MDLT".utf8) + [0x01]
        varint(UInt64(base.count), &out)
        varint(UInt64(targetLength ?? target.count), &out)
        out += Array(SHA256.hash(data: base))
        out += Array(SHA256.hash(data: target))
        return out + operations
    }

    static func varint(_ value: UInt64, _ out: inout [UInt8]) {
        var rest = value
        while rest >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        out.append(UInt8(rest))
    }

    static func expectError(
        _ delta: [UInt8], base: [UInt8]? = nil, maximum: Int = 1 << 20, code: MusterError.Code, containing text: String
    ) {
        let base = base ?? sample().base
        do {
            _ = try BinaryDelta.apply(delta, base: base, maximumTargetLength: maximum)
            Issue.record("a hostile delta was applied")
        } catch let error as MusterError {
            #expect(error.code == code, "\(error.message)")
            #expect(error.message.contains(text), "\(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func badMagicIsRefused() {
        var delta = Self.sample().delta
        delta[0] = UInt8(ascii: "X")
        Self.expectError(delta, code: .invalidInput, containing: "not a Muster delta")
        Self.expectError([], code: .invalidInput, containing: "not a Muster delta")
        var version = Self.sample().delta
        version[4] = 2
        Self.expectError(version, code: .invalidInput, containing: "format version")
    }

    @Test func everyTruncationIsRefusedPrecisely() {
        let (base, _, delta) = Self.sample()
        for length in 5..<delta.count {
            do {
                _ = try BinaryDelta.apply(Array(delta[0..<length]), base: base, maximumTargetLength: 1 << 20)
                Issue.record("a delta truncated to \(length) of \(delta.count) bytes was applied")
            } catch let error as MusterError {
                #expect(error.code == .invalidInput, "\(error.message)")
                #expect(
                    error.message.contains("truncated") || error.message.contains("produce"), "\(error.message)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
    }

    @Test func copyOutsideTheBaseIsRefused() {
        let (base, _, _) = Self.sample()
        var past: [UInt8] = [0x01]
        Self.varint(UInt64(base.count - 10), &past)
        Self.varint(11, &past)
        Self.expectError(Self.forged(past), code: .invalidInput, containing: "past the base's end")
        var huge: [UInt8] = [0x01]
        Self.varint(UInt64.max, &huge)
        Self.varint(UInt64.max, &huge)
        Self.expectError(Self.forged(huge), code: .invalidInput, containing: "past the base's end")
    }

    @Test func operationsThatOverrunOrFallShortOfTheTargetAreRefused() {
        let (base, target, _) = Self.sample()
        var overrun: [UInt8] = [0x01]
        Self.varint(0, &overrun)
        Self.varint(UInt64(base.count), &overrun)
        Self.expectError(
            Self.forged(overrun, targetLength: 100), code: .invalidInput, containing: "overruns the target length")
        var literal: [UInt8] = [0x02]
        Self.varint(1 << 40, &literal)
        Self.expectError(Self.forged(literal), code: .invalidInput, containing: "overruns the target length")
        var short: [UInt8] = [0x01]
        Self.varint(0, &short)
        Self.varint(10, &short)
        Self.expectError(Self.forged(short), code: .invalidInput, containing: "produce 10 bytes")
        _ = target
    }

    @Test func unknownTagsAndOverlongVarintsAreRefused() {
        Self.expectError(Self.forged([0x07]), code: .invalidInput, containing: "unknown operation tag 0x7")
        let overlong: [UInt8] = [0x01] + [UInt8](repeating: 0xff, count: 11)
        Self.expectError(Self.forged(overlong), code: .invalidInput, containing: "overflows 64 bits")
    }

    @Test func aTargetAboveTheCallersMaximumIsRefusedBeforeAllocating() {
        let delta = Self.forged([], targetLength: Int(Int32.max))
        Self.expectError(delta, maximum: 1 << 20, code: .invalidInput, containing: "exceeds the expected")
    }

    @Test func anotherBaseIsRefused() {
        let (base, _, delta) = Self.sample()
        var other = base
        other[17] ^= 0xff
        Self.expectError(delta, base: other, code: .digestMismatch, containing: "another base")
        Self.expectError(delta, base: Array(base.dropLast()), code: .digestMismatch, containing: "local base has 4095")
    }

    @Test func aWrongTargetDigestIsRefused() {
        let (base, target, _) = Self.sample()
        var wrong = target
        wrong[0] ^= 1
        // Correct operations, but the header names another target.
        var copy: [UInt8] = [0x01]
        Self.varint(0, &copy)
        Self.varint(UInt64(base.count), &copy)
        Self.expectError(
            Self.forged(copy, target: wrong), base: base, code: .digestMismatch, containing: "target sha256")
    }
}
