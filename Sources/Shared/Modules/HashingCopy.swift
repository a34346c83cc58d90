import Crypto

#if canImport(Glibc)
    import Glibc
#endif

/// Copies one open file into another until end of file in 1 MiB reads, hashing what passes (sha256), retrying
/// interrupted calls and short writes: how the module builder fills its object store and how a node installs a
/// built bundle.
public enum HashingCopy {
    /// Which side failed, with `errno`, for the caller to name the path.
    public enum Failure: Error, Sendable {
        case read(errno: Int32)
        case write(errno: Int32)
    }

    /// - Returns: the bytes copied and the hex sha256 of them.
    public static func copy(from input: Int32, to output: Int32) throws(Failure) -> (size: UInt64, digest: String) {
        var hasher = SHA256()
        var size: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .read(errno: errno)
            }
            if count == 0 { break }
            let failed: Int32? = buffer.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[..<count])
                hasher.update(bufferPointer: chunk)
                var offset = 0
                while offset < count {
                    let written = write(output, chunk.baseAddress.map { $0 + offset }, count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        return errno
                    }
                    offset += written
                }
                return nil
            }
            if let failed { throw .write(errno: failed) }
            size += UInt64(count)
        }
        return (size, ContentDigest.hex(hasher.finalize()))
    }
}
