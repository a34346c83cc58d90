import Crypto
import Foundation
import NIOCore
import Shared
import Testing

@testable import Coordinator

@Suite("ModuleRepository: deltas computed once, served in ranges, refused precisely")
struct ModuleRepositoryDeltaTests {
    static func bytes(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &* 7 &+ ($0 >> 9)) }
    }

    /// A repository holding two images (as stored by an upload).
    static func repository() async throws -> (ModuleRepository, base: (String, [UInt8]), target: (String, [UInt8])) {
        let repository = ModuleRepository(stateDirectory: try TestCoordinator.temporaryDirectory("delta-repo"))
        try repository.prepare()
        let base = bytes(200_000, seed: 1)
        var target = base
        target.replaceSubrange(50_000..<50_100, with: bytes(100, seed: 9))
        var stored: [(String, [UInt8])] = []
        for content in [base, target] {
            let digest = ContentDigest.hex(SHA256.hash(data: content))
            let body = AsyncStream<ByteBuffer> { continuation in
                continuation.yield(ByteBuffer(bytes: content))
                continuation.finish()
            }
            _ = try await repository.store(.image, digest: digest, body: body)
            stored.append((digest, content))
        }
        return (repository, stored[0], stored[1])
    }

    @Test func aDeltaIsComputedOnceAndServedInRanges() async throws {
        let (repository, base, target) = try await Self.repository()
        let allocator = ByteBufferAllocator()
        var delta: [UInt8] = []
        var offset: UInt64 = 0
        var total: UInt64 = 0
        repeat {
            let (data, size) = try await repository.readDelta(
                .imageDelta, digest: target.0, base: base.0, offset: offset, length: 100, allocator: allocator)
            delta += Array(data.readableBytesView)
            offset += UInt64(data.readableBytes)
            total = size
        } while offset < total
        #expect(delta.count < 1_000)
        #expect(try BinaryDelta.apply(delta, base: base.1, maximumTargetLength: target.1.count) == target.1)
        let cached = repository.deltaPath(.imageDelta, digest: target.0, base: base.0)
        #expect(FileManager.default.contents(atPath: cached).map { [UInt8]($0) } == delta)
    }

    @Test func badRequestsAreRefusedWithPreciseErrors() async throws {
        let (repository, base, target) = try await Self.repository()
        let allocator = ByteBufferAllocator()
        let missing = String(repeating: "e", count: 64)
        let cases: [(TransferKind, String, String?, UInt64, MusterError.Code, String)] = [
            (.imageDelta, target.0, nil, 0, .invalidInput, "needs a target and a base"),
            (.imageDelta, target.0, "../etc", 0, .invalidInput, "needs a target and a base"),
            (.imageDelta, target.0, target.0, 0, .invalidInput, "against itself"),
            (.imageDelta, target.0, missing, 0, .notFound, "does not hold image \(missing)"),
            (.descriptorDelta, target.0, base.0, 0, .notFound, "does not hold descriptor of image \(base.0)"),
            (.image, target.0, base.0, 0, .invalidInput, "not a delta kind"),
            (.imageDelta, target.0, base.0, 1 << 30, .invalidInput, "past the end"),
        ]
        for (kind, digest, baseDigest, offset, code, text) in cases {
            do {
                _ = try await repository.readDelta(
                    kind, digest: digest, base: baseDigest, offset: offset, length: 10, allocator: allocator)
                Issue.record("\(kind) against \(baseDigest ?? "nil") was served")
            } catch let error as MusterError {
                #expect(error.code == code, "\(error.message)")
                #expect(error.message.contains(text), "\(error.message)")
            }
        }
    }
}
