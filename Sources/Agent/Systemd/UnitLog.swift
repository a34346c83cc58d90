import Dispatch
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Where a unit's output goes, to attach its last lines to a failure.
enum UnitLogSource: Sendable, Equatable {
    /// `StandardOutput=append:PATH` (tests; nodes without journald).
    case file(String)
    /// The journal: the local one (`nil`) or a directory of journal files (a test node's `/run/log/journal`).
    case journal(directory: String?)
}

/// The last lines of a unit's output, for failure reports.
enum UnitLog {
    /// The last `lines` lines of `unit`'s output from `source`; `[]` when nothing can be read. Runs the blocking
    /// reads on a global queue, off the cooperative pool.
    static func tail(of unit: UnitName, from source: UnitLogSource, lines: Int) async -> [String] {
        await runBlocking {
            switch source {
            case .file(let path): tail(path: path, lines: lines)
            case .journal(let directory):
                (try? SDJournal.tail(unit: unit.rawValue, lines: lines, directory: directory)) ?? []
            }
        }
    }

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
