#if canImport(Glibc)
    import Glibc
#endif

/// The last lines of a unit's log file (`StandardOutput=append:PATH`), for failure reports.
enum UnitLog {
    /// Reads at most the final 64 KiB of `path` and returns its last `lines` lines; `[]` if unreadable.
    static func tail(path: String, lines: Int, maximumBytes: Int = 65536) -> [String] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { return [] }
        let start = max(0, Int(end) - maximumBytes)
        var bytes = [UInt8](repeating: 0, count: Int(end) - start)
        var got = 0
        while got < bytes.count {
            let n = bytes.withUnsafeMutableBytes {
                pread(fd, $0.baseAddress.map { $0 + got }, $0.count - got, off_t(start + got))
            }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            got += n
        }
        let text = String(decoding: bytes[0..<got], as: UTF8.self)
        var all = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if all.last == "" { all.removeLast() }
        if start > 0, !all.isEmpty { all.removeFirst() }  // probably a partial line
        return Array(all.suffix(lines))
    }
}
