import Crypto
import Foundation
import Logging
import NIOCore
import Shared

@testable import Agent
@testable import Coordinator

/// Small modules for transfer tests, built with the real ``ModuleBuilder`` (mkfs.erofs, trusted xattrs: root)
/// and signed with a given key.
enum ModuleKit {
    /// Deterministic pseudo-random bytes (xorshift), so modules of the same seeds share objects.
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var out = [UInt8](repeating: 0, count: count)
        for index in out.indices {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            out[index] = UInt8(truncatingIfNeeded: state)
        }
        return out
    }

    /// Builds `name@version` with `/bin/main` plus `files` (path in the image → content) into `base/NAME-VERSION`.
    static func build(
        name: String, version: String, files: [String: [UInt8]], key: Curve25519.Signing.PrivateKey, base: String
    ) async throws -> ModuleBundle {
        let source = "\(base)/src-\(name)-\(version)"
        let rootfs = "\(source)/rootfs"
        try FileManager.default.createDirectory(atPath: "\(rootfs)/bin", withIntermediateDirectories: true)
        try """
        name: \(name)
        version: \(version)
        services:
          - name: main
            exec: [/bin/main]
        """.write(toFile: "\(source)/module.yaml", atomically: true, encoding: .utf8)
        try Data("#!/bin/sh\nexec sleep 3600\n".utf8).write(to: URL(fileURLWithPath: "\(rootfs)/bin/main"))
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: "\(rootfs)/bin/main")
        for (path, content) in files {
            let full = rootfs + path
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(content).write(to: URL(fileURLWithPath: full))
        }
        var logger = Logger(label: "muster.test.module-kit")
        logger.logLevel = .critical
        let result = try await ModuleBuilder(logger: logger).build(
            moduleDirectory: source, outputDirectory: "\(base)/\(name)-\(version)",
            signer: DescriptorSigner(key: key))
        return ModuleBundle(directory: result.outputDirectory)
    }

    /// A file as an async sequence of 1 MiB buffers (what an upload body looks like).
    static func chunks(of path: String) throws -> AsyncStream<ByteBuffer> {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return AsyncStream { continuation in
            var offset = 0
            while offset < data.count {
                let end = min(data.count, offset + (1 << 20))
                continuation.yield(ByteBuffer(bytes: data[offset..<end]))
                offset = end
            }
            continuation.finish()
        }
    }

    /// Puts a bundle's image, objects and descriptor into a coordinator's repository, as publishing does.
    static func install(_ bundle: ModuleBundle, into repository: ModuleRepository) async throws -> ModuleDescriptor.Payload {
        let payload = try bundle.loadDescriptor().payload
        _ = try await repository.store(.image, digest: payload.image.digest, body: try chunks(of: bundle.imagePath))
        for object in payload.objects {
            _ = try await repository.store(
                .object, digest: object.digest, body: try chunks(of: bundle.objects.path(of: object.digest)))
        }
        let descriptor = try Data(contentsOf: URL(fileURLWithPath: bundle.descriptorPath))
        try repository.storeDescriptor(descriptor, imageDigest: payload.image.digest)
        return payload
    }

    /// Regular files under `directory`, as paths relative to it.
    static func files(under directory: String) -> Set<String> {
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return [] }
        var out = Set<String>()
        while let relative = enumerator.nextObject() as? String {
            if FileStatus.lstat("\(directory)/\(relative)")?.kind == .regular { out.insert(relative) }
        }
        return out
    }

    /// The object directory's relative paths for a set of objects.
    static func objectPaths(_ objects: [ModuleDescriptor.Object]) -> Set<String> {
        Set(objects.map { ObjectDirectory.relativePath(of: $0.digest) })
    }
}
