import Crypto

#if canImport(Glibc)
    import Glibc
#endif

extension TreeWalker {
    /// SHA-256 of a regular file's content, read without following a final symlink.
    /// - Throws: ``WalkError`` when the file cannot be opened or read.
    static func sha256(root: String, relative: [UInt8]) throws -> SHA256.Digest {
        let path = cPath(root: root, relative: relative)
        let fd = withCString(path) { open($0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw WalkError(path: root + "/" + display(relative), operation: "open", errno: errno) }
        defer { close(fd) }
        var hasher = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw WalkError(path: root + "/" + display(relative), operation: "read", errno: errno)
            }
            if count == 0 { break }
            chunk.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
        }
        return hasher.finalize()
    }

}
