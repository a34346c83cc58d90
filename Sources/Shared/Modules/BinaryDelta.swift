import Crypto

/// A binary delta: the bytes of a target file described as copies of ranges of a base file plus literal bytes,
/// so a node that holds an earlier version of a module's image or descriptor receives only what changed.
///
/// Format (all integers unsigned LEB128 varints):
/// ```
/// "MDLT" 0x01                               magic and format version
/// baseLength targetLength                   both sides' sizes
/// sha256(base) sha256(target)               32 bytes each
/// op*                                       until the end of the delta:
///   0x01 offset length                      COPY length bytes of the base from offset
///   0x02 length bytes                       LITERAL: the next length bytes of the delta
/// ```
///
/// ``make(base:target:)`` indexes the base in blocks of ``blockSize`` bytes by a rolling hash, slides the same
/// hash over the target, verifies every candidate byte for byte (both files are local, so no strong block hash
/// is needed), extends each match forward and backward, and also tries the base offset right after the
/// previous match (same-length replacements keep that alignment), then coalesces adjacent operations.
///
/// ``apply(_:base:maximumTargetLength:)`` trusts nothing in the delta: it checks the magic, both lengths, the
/// base's sha256, the bounds of every operation before copying, the total length and the result's sha256, and
/// throws a precise `MusterError` instead of crashing or allocating what a hostile header asks for.
public enum BinaryDelta {
    /// The block size of the base index (EROFS inodes and directory entries are 32-64 bytes).
    public static let blockSize = 32
    static let magic: [UInt8] = Array("MDLT".utf8) + [0x01]
    static let copyTag: UInt8 = 0x01
    static let literalTag: UInt8 = 0x02

    /// One operation of a decoded delta.
    public enum Operation: Equatable, Sendable {
        case copy(offset: Int, length: Int)
        case literal(Range<Int>)
    }

    /// A decoded delta header.
    public struct Header: Equatable, Sendable {
        public var baseLength: Int
        public var targetLength: Int
        public var baseDigest: [UInt8]
        public var targetDigest: [UInt8]
    }

    // MARK: - Make

    /// The delta that turns `base` into `target`.
    public static func make(base: [UInt8], target: [UInt8]) -> [UInt8] {
        var out = magic
        appendVarint(UInt64(base.count), to: &out)
        appendVarint(UInt64(target.count), to: &out)
        out += Array(SHA256.hash(data: base))
        out += Array(SHA256.hash(data: target))
        var writer = OperationWriter()
        base.withUnsafeBufferPointer { b in
            target.withUnsafeBufferPointer { t in
                encodeOperations(base: b, target: t, into: &writer)
            }
        }
        writer.finish(target: target, into: &out)
        return out
    }

    /// Collects operations, merging a COPY that continues the previous one and adjacent literals.
    private struct OperationWriter {
        var operations: [Operation] = []

        mutating func copy(offset: Int, length: Int) {
            guard length > 0 else { return }
            if case .copy(let previousOffset, let previousLength) = operations.last,
                previousOffset + previousLength == offset
            {
                operations[operations.count - 1] = .copy(offset: previousOffset, length: previousLength + length)
            } else {
                operations.append(.copy(offset: offset, length: length))
            }
        }

        mutating func literal(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            if case .literal(let previous) = operations.last, previous.upperBound == range.lowerBound {
                operations[operations.count - 1] = .literal(previous.lowerBound..<range.upperBound)
            } else {
                operations.append(.literal(range))
            }
        }

        func finish(target: [UInt8], into out: inout [UInt8]) {
            for operation in operations {
                switch operation {
                case .copy(let offset, let length):
                    out.append(BinaryDelta.copyTag)
                    BinaryDelta.appendVarint(UInt64(offset), to: &out)
                    BinaryDelta.appendVarint(UInt64(length), to: &out)
                case .literal(let range):
                    out.append(BinaryDelta.literalTag)
                    BinaryDelta.appendVarint(UInt64(range.count), to: &out)
                    out += target[range]
                }
            }
        }
    }

    /// Multiplier of the polynomial rolling hash (odd, so the hash mixes every byte).
    private static let multiplier: UInt32 = 0x0100_0193

    private static func hash(_ bytes: UnsafeBufferPointer<UInt8>, at start: Int) -> UInt32 {
        var h: UInt32 = 0
        for index in start..<(start + blockSize) { h = h &* multiplier &+ UInt32(bytes[index]) }
        return h
    }

    private static func encodeOperations(
        base: UnsafeBufferPointer<UInt8>, target: UnsafeBufferPointer<UInt8>, into writer: inout OperationWriter
    ) {
        let n = target.count
        guard base.count >= blockSize, n >= blockSize else {
            writer.literal(0..<n)
            return
        }
        // multiplier^(blockSize - 1): the weight of the byte that leaves the window.
        var outFactor: UInt32 = 1
        for _ in 1..<blockSize { outFactor = outFactor &* multiplier }

        // First base offset of every block hash (block-aligned: one entry per block keeps the index small).
        var index: [UInt32: Int] = [:]
        index.reserveCapacity(base.count / blockSize)
        var blockStart = 0
        while blockStart + blockSize <= base.count {
            let h = hash(base, at: blockStart)
            if index[h] == nil { index[h] = blockStart }
            blockStart += blockSize
        }

        var literalStart = 0
        // A verified match of the block at `targetOffset` at `baseOffset`, extended forward and backward.
        func extend(_ baseOffset: Int, _ targetOffset: Int) -> (offset: Int, back: Int, forward: Int)? {
            guard baseOffset >= 0, baseOffset + blockSize <= base.count else { return nil }
            for offset in 0..<blockSize where base[baseOffset + offset] != target[targetOffset + offset] {
                return nil
            }
            var forward = blockSize
            while baseOffset + forward < base.count, targetOffset + forward < n,
                base[baseOffset + forward] == target[targetOffset + forward]
            {
                forward += 1
            }
            var back = 0
            while targetOffset - back > literalStart, baseOffset - back > 0,
                base[baseOffset - back - 1] == target[targetOffset - back - 1]
            {
                back += 1
            }
            return (baseOffset, back, forward)
        }

        var t = 0
        var h = hash(target, at: 0)
        // Where the base continues after the previous match, kept in step while bytes are literal.
        var predicted: Int? = nil
        // Base offset minus target offset of the last long match: after an edit that a short match elsewhere
        // covered (repetitive data), the file usually continues on this diagonal.
        var anchorShift: Int? = nil
        while t + blockSize <= n {
            var best = predicted.flatMap { extend($0, t) }
            func consider(_ candidate: Int?) {
                guard let candidate, candidate != best?.offset, let match = extend(candidate, t),
                    match.back + match.forward > (best.map { $0.back + $0.forward } ?? 0)
                else { return }
                best = match
            }
            consider(anchorShift.map { t + $0 })
            consider(index[h])
            if let best {
                writer.literal(literalStart..<(t - best.back))
                writer.copy(offset: best.offset - best.back, length: best.back + best.forward)
                t += best.forward
                literalStart = t
                predicted = best.offset + best.forward
                if best.back + best.forward >= 8 * blockSize { anchorShift = best.offset - (t - best.forward) }
                if t + blockSize <= n { h = hash(target, at: t) }
                continue
            }
            if t + blockSize < n {
                h = h &- outFactor &* UInt32(target[t])
                h = h &* multiplier &+ UInt32(target[t + blockSize])
            }
            t += 1
            if let current = predicted { predicted = current + 1 }
        }
        writer.literal(literalStart..<n)
    }

    // MARK: - Apply

    /// Rebuilds the target from `delta` and `base`.
    ///
    /// - Parameters:
    ///   - delta: The delta, from an untrusted source.
    ///   - base: The local base file the delta must have been made against.
    ///   - maximumTargetLength: The largest target the caller accepts (checked before anything is allocated).
    /// - Returns: The target; its sha256 was checked against the one in the delta.
    /// - Throws: `MusterError` `.invalidInput` for a malformed delta (bad magic, truncated, a COPY outside the
    ///   base, operations that do not add up to the target length, trailing bytes, a target above
    ///   `maximumTargetLength`), `.digestMismatch` when `base` is not the delta's base or the result does not
    ///   hash to the delta's target digest.
    public static func apply(_ delta: [UInt8], base: [UInt8], maximumTargetLength: Int) throws -> [UInt8] {
        var reader = Reader(bytes: delta)
        let header = try readHeader(&reader)
        guard header.baseLength == base.count else {
            throw MusterError(
                .digestMismatch,
                "delta: it was made against a base of \(header.baseLength) bytes, the local base has \(base.count)")
        }
        guard header.targetLength <= maximumTargetLength else {
            throw MusterError(
                .invalidInput,
                "delta: its target of \(header.targetLength) bytes exceeds the expected \(maximumTargetLength)")
        }
        guard Array(SHA256.hash(data: base)) == header.baseDigest else {
            throw MusterError(.digestMismatch, "delta: it was made against another base (sha256 differs)")
        }
        var out: [UInt8] = []
        out.reserveCapacity(header.targetLength)
        var number = 0
        while !reader.atEnd {
            let tag = try reader.byte("operation \(number)")
            switch tag {
            case copyTag:
                let offset = try reader.varint("COPY offset of operation \(number)")
                let length = try reader.varint("COPY length of operation \(number)")
                guard offset <= UInt64(base.count), length <= UInt64(base.count) - offset else {
                    throw MusterError(
                        .invalidInput,
                        "delta: operation \(number) copies \(length) bytes at offset \(offset), past the base's end "
                            + "(\(base.count) bytes)")
                }
                guard length <= UInt64(header.targetLength - out.count) else {
                    throw MusterError(
                        .invalidInput,
                        "delta: operation \(number) (COPY of \(length) bytes) overruns the target length "
                            + "\(header.targetLength) at \(out.count)")
                }
                out += base[Int(offset)..<Int(offset + length)]
            case literalTag:
                let length = try reader.varint("LITERAL length of operation \(number)")
                guard length <= UInt64(header.targetLength - out.count) else {
                    throw MusterError(
                        .invalidInput,
                        "delta: operation \(number) (LITERAL of \(length) bytes) overruns the target length "
                            + "\(header.targetLength) at \(out.count)")
                }
                out += try reader.bytes(Int(length), "LITERAL bytes of operation \(number)")
            default:
                throw MusterError(
                    .invalidInput,
                    "delta: unknown operation tag 0x\(String(tag, radix: 16)) at byte \(reader.position - 1)")
            }
            number += 1
        }
        guard out.count == header.targetLength else {
            throw MusterError(
                .invalidInput,
                "delta: its operations produce \(out.count) bytes, the header says \(header.targetLength)")
        }
        guard Array(SHA256.hash(data: out)) == header.targetDigest else {
            throw MusterError(.digestMismatch, "delta: the rebuilt file does not match the delta's target sha256")
        }
        return out
    }

    /// Decodes only the header (magic, lengths, digests).
    ///
    /// - Throws: `MusterError` `.invalidInput`.
    public static func header(of delta: [UInt8]) throws -> Header {
        var reader = Reader(bytes: delta)
        return try readHeader(&reader)
    }

    private static func readHeader(_ reader: inout Reader) throws -> Header {
        guard reader.bytes.count >= magic.count, Array(reader.bytes[0..<magic.count]) == magic else {
            throw MusterError(.invalidInput, "delta: not a Muster delta (bad magic or format version)")
        }
        reader.position = magic.count
        let baseLength = try reader.varint("base length")
        let targetLength = try reader.varint("target length")
        guard baseLength <= UInt64(Int.max / 2), targetLength <= UInt64(Int.max / 2) else {
            throw MusterError(.invalidInput, "delta: lengths \(baseLength) / \(targetLength) are out of range")
        }
        let baseDigest = try reader.bytes(32, "base sha256")
        let targetDigest = try reader.bytes(32, "target sha256")
        return Header(
            baseLength: Int(baseLength), targetLength: Int(targetLength), baseDigest: baseDigest,
            targetDigest: targetDigest)
    }

    // MARK: - Varints

    static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var rest = value
        while rest >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        out.append(UInt8(rest))
    }

    private struct Reader {
        let bytes: [UInt8]
        var position = 0

        var atEnd: Bool { position >= bytes.count }

        mutating func byte(_ what: String) throws -> UInt8 {
            guard position < bytes.count else { throw truncated(what) }
            defer { position += 1 }
            return bytes[position]
        }

        mutating func bytes(_ count: Int, _ what: String) throws -> [UInt8] {
            guard count <= bytes.count - position else { throw truncated(what) }
            defer { position += count }
            return Array(bytes[position..<(position + count)])
        }

        mutating func varint(_ what: String) throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                let byte = try self.byte(what)
                guard shift < 63 || (shift == 63 && byte <= 1) else {
                    throw MusterError(.invalidInput, "delta: the varint for the \(what) overflows 64 bits")
                }
                value |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
        }

        func truncated(_ what: String) -> MusterError {
            MusterError(.invalidInput, "delta: truncated at byte \(position) (reading the \(what))")
        }
    }
}
