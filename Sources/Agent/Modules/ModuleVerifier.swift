import Crypto
import Foundation
import Shared

#if canImport(CoreFoundation)
    // With MemberImportVisibility, members of glibc structs (stat, dirent, sockaddr, passwd, statvfs) may resolve to
    // CoreFoundation's copy of the headers depending on build order, so that module is imported explicitly.
    import CoreFoundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// Checks a stored module version before it is mounted: the descriptor's signature (trusted keys), that it
/// describes the requested image, the image's sha256 and every object's sha256 (this kernel has no fs-verity:
/// overlay would serve a changed object silently, TESTING.md).
///
/// Hashing every object on every attach would make attaching an already-verified module slow, so files that
/// passed are remembered in `<store>/verified.json` by (device, inode, size, mtime, ctime). Any write to a file
/// changes its ctime (which no user can set back), and a replaced file has another inode, so a changed file is
/// always hashed again. What the cache cannot see is a change to the raw block device under the file system.
struct ModuleVerifier: Sendable {
    let store: NodeModuleStore
    let trustedKeys: [Curve25519.Signing.PublicKey]

    /// What one verification did.
    struct Result: Sendable {
        var payload: ModuleDescriptor.Payload
        /// Files hashed now (the rest were known to be unchanged since they were last hashed).
        var hashed: Int
        var cached: Int
    }

    /// Verifies the stored module version `imageDigest`.
    ///
    /// - Throws: `MusterError` `.notFound` (descriptor, image or objects missing; every missing object is counted),
    ///   `.verificationFailed` (unknown key, bad signature, a descriptor for another image, invalid manifest),
    ///   `.digestMismatch` (the image or an object has other content), `.io`.
    func verify(imageDigest: String) throws -> Result {
        let descriptor = try store.loadDescriptor(imageDigest: imageDigest)
        let payload = try descriptor.verify(trustedKeys: trustedKeys)
        guard payload.image.digest == imageDigest else {
            throw MusterError(
                .verificationFailed,
                "descriptor \(store.descriptorPath(imageDigest)) describes image \(payload.image.digest), "
                    + "not \(imageDigest)")
        }
        let missing = store.missingObjects(of: payload)
        if !missing.isEmpty {
            let bytes = missing.reduce(UInt64(0)) { $0 + $1.size }
            throw MusterError(
                .notFound,
                "module \(payload.manifest.name)@\(payload.manifest.version): \(missing.count) of "
                    + "\(payload.objects.count) objects (\(bytes) bytes) are missing, first \(missing[0].digest)",
                hint: "fetch the missing objects again")
        }
        var cache = loadCache()
        var hashed = 0
        var cached = 0
        defer { saveCache(cache) }
        let imagePath = store.imagePath(imageDigest)
        if try checkFile(
            imagePath, digest: imageDigest, size: payload.image.size, what: "image", cache: &cache)
        {
            hashed += 1
        } else {
            cached += 1
        }
        for object in payload.objects {
            if try checkFile(
                store.objects.path(of: object.digest), digest: object.digest, size: object.size,
                what: "object", cache: &cache)
            {
                hashed += 1
            } else {
                cached += 1
            }
        }
        return Result(payload: payload, hashed: hashed, cached: cached)
    }

    /// Hashes `path` unless the cache knows it unchanged. Returns whether it was hashed.
    private func checkFile(
        _ path: String, digest: String, size: UInt64, what: String, cache: inout [String: String]
    ) throws -> Bool {
        let key = Self.statKey(path)
        if let key, cache[digest] == key { return false }
        cache[digest] = nil
        guard let (actual, actualSize) = try ContentDigest.sha256(ofFileAt: path) else {
            throw MusterError(.notFound, "\(what) \(digest) is missing (\(path))", hint: "fetch it again")
        }
        guard actual == digest, actualSize == size else {
            throw MusterError(
                .digestMismatch,
                "\(what) \(digest) has been changed: its content has sha256 \(actual) (\(actualSize) bytes, "
                    + "signed \(size) bytes); refusing to mount",
                hint: "delete \(path) and fetch it again")
        }
        // Stat again after hashing: a file changed while it was read gets no cache entry.
        if let after = Self.statKey(path), after == key { cache[digest] = after }
        return true
    }

    // MARK: - Cache

    /// `dev:ino:size:mtime_ns:ctime_ns` of a regular file (not following symlinks), `nil` otherwise.
    static func statKey(_ path: String) -> String? {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        let mtime = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        let ctime = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
        return "\(info.st_dev):\(info.st_ino):\(info.st_size):\(mtime):\(ctime)"
    }

    private func loadCache() -> [String: String] {
        guard let data = FileManager.default.contents(atPath: store.verificationCachePath),
            let cache = try? JSONDecoder().decode([String: String].self, from: data)
        else { return [:] }
        return cache
    }

    /// Best effort: a cache that cannot be written only costs hashing again next time. Entries of files that are
    /// gone are dropped.
    private func saveCache(_ cache: [String: String]) {
        var kept: [String: String] = [:]
        for (digest, key) in cache {
            let path =
                FileStatus.lstat(store.imagePath(digest)) != nil
                ? store.imagePath(digest) : store.objects.path(of: digest)
            if Self.statKey(path) == key { kept[digest] = key }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(kept) else { return }
        try? data.write(to: URL(fileURLWithPath: store.verificationCachePath), options: .atomic)
    }
}
