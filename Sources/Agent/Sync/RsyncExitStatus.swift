/// rsync's exit code with its meaning, and the per-file problems rsync reported on stderr.
///
/// Codes are those of rsync(1) "EXIT VALUES" (`errcode.h`). 24 (source files vanished during the transfer) is
/// a ``Severity/warning``: everything that still existed was copied, and a re-run settles the rest.
struct RsyncExitStatus: Sendable, Equatable {
    enum Severity: String, Sendable, Equatable, Codable {
        case success, warning, failure
    }

    /// One file rsync could not handle, from a stderr line such as
    /// `rsync: [sender] send_files failed to open "/src/a": Permission denied (13)`.
    struct FileProblem: Sendable, Equatable, Codable {
        /// The path as rsync printed it: non-printable bytes are `\#ooo` octal escapes (a newline is `\#012`).
        var path: String
        /// What went wrong, e.g. `Permission denied (13)`.
        var reason: String

        /// The path's raw bytes, with rsync's `\#ooo` escapes undone.
        var pathBytes: [UInt8] { RsyncExitStatus.unescape(path) }
    }

    /// The process exit code (or 128 + signal when rsync was killed).
    var code: Int32
    /// Files rsync reported as failed (exit 23) — empty if it reported none.
    var failedFiles: [FileProblem]
    /// Files that vanished while rsync ran (exit 24).
    var vanishedFiles: [String]
    /// True when stderr said the destination ran out of space (ENOSPC), whatever the code.
    var destinationFull: Bool

    init(code: Int32, stderrLines: [String]) {
        self.code = code
        var failed: [FileProblem] = []
        var vanished: [String] = []
        var full = false
        for line in stderrLines {
            if line.contains("No space left on device") || line.contains("Disk quota exceeded") { full = true }
            if line.hasPrefix("file has vanished: ") {
                if let path = Self.quoted(line) { vanished.append(path) }
            } else if line.hasPrefix("rsync: "), !line.hasPrefix("rsync: connection unexpectedly closed"),
                let path = Self.quoted(line)
            {
                failed.append(FileProblem(path: path, reason: Self.reason(line)))
            }
        }
        failedFiles = failed
        vanishedFiles = vanished
        destinationFull = full
    }

    var severity: Severity {
        switch code {
        case 0: .success
        case 24: .warning
        default: .failure
        }
    }

    /// rsync(1)'s description of the code.
    var meaning: String {
        switch code {
        case 0: "success"
        case 1: "syntax or usage error"
        case 2: "protocol incompatibility"
        case 3: "errors selecting input/output files or directories"
        case 4: "requested action not supported (an option this rsync or the remote one does not support)"
        case 5: "error starting the client-server protocol"
        case 6: "daemon unable to append to its log file"
        case 10: "error in socket I/O"
        case 11: "error in file I/O"
        case 12: "error in the rsync protocol data stream"
        case 13: "errors with program diagnostics"
        case 14: "error in IPC code"
        case 15: "a sibling rsync process crashed"
        case 16: "a sibling rsync process terminated abnormally"
        case 19: "received SIGUSR1"
        case 20: "received SIGINT, SIGTERM or SIGHUP"
        case 21: "some error returned by waitpid()"
        case 22: "error allocating core memory buffers"
        case 23: "partial transfer due to error"
        case 24: "partial transfer due to vanished source files"
        case 25: "the --max-delete limit stopped deletions"
        case 30: "timeout in data send/receive"
        case 35: "timeout waiting for daemon connection"
        case 124: "the remote shell failed"
        case 125: "the remote shell was killed"
        case 126: "the remote shell command could not be run"
        case 127: "the remote shell command was not found"
        case 128...: "rsync was killed by signal \(code - 128)"
        default: "unknown rsync exit code \(code)"
        }
    }

    /// The operator-facing message: the meaning, the cause we recognise, and up to `limit` files named.
    func message(limit: Int = 20) -> String {
        var text = "rsync exited with \(code): \(meaning)"
        if destinationFull { text += "; the destination ran out of space (No space left on device)" }
        if !failedFiles.isEmpty {
            text += "; \(failedFiles.count) file(s) failed:"
            for problem in failedFiles.prefix(limit) { text += "\n  \(problem.path): \(problem.reason)" }
            if failedFiles.count > limit { text += "\n  … and \(failedFiles.count - limit) more" }
        }
        if !vanishedFiles.isEmpty {
            text += "; \(vanishedFiles.count) source file(s) vanished during the copy:"
            for path in vanishedFiles.prefix(limit) { text += "\n  \(path)" }
            if vanishedFiles.count > limit { text += "\n  … and \(vanishedFiles.count - limit) more" }
        }
        return text
    }

    /// What to do about it.
    var hint: String? {
        if destinationFull {
            return "free space on the destination (or use a bigger volume), then re-run: only what is missing is copied"
        }
        switch code {
        case 23: return "fix the files listed (permissions, I/O errors), then re-run: only what is missing is copied"
        case 24: return "the source changed while copying; re-run to pick up a consistent state"
        case 20: return "the copy was interrupted; re-run to resume (partial files are kept)"
        case 1: return "this rsync does not accept an option Muster passes; rsync ≥ 3.1 is required"
        default: return nil
        }
    }

    // MARK: - stderr parsing

    /// The text between the first and the last `"` of a line; rsync quotes exactly one path per message.
    private static func quoted(_ line: String) -> String? {
        guard let first = line.firstIndex(of: "\""), let last = line.lastIndex(of: "\""), first < last else {
            return nil
        }
        return String(line[line.index(after: first)..<last])
    }

    /// What follows the quoted path: `": Permission denied (13)"` or `" failed: Permission denied (13)"`.
    private static func reason(_ line: String) -> String {
        guard let last = line.lastIndex(of: "\"") else { return line }
        var rest = line[line.index(after: last)...]
        if rest.hasPrefix(" failed") { rest = rest.dropFirst(7) }
        if rest.hasPrefix(":") { rest = rest.dropFirst() }
        let trimmed = rest.drop(while: { $0 == " " })
        // Messages without a reason after the path keep their whole text as the reason.
        return trimmed.isEmpty ? line : String(trimmed)
    }

    /// Undoes rsync's `\#ooo` escapes (three octal digits) of non-printable bytes.
    static func unescape(_ text: String) -> [UInt8] {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\\"), index + 4 < bytes.count, bytes[index + 1] == UInt8(ascii: "#"),
                let value = octal(bytes[(index + 2)..<(index + 5)])
            {
                out.append(value)
                index += 5
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return out
    }

    private static func octal(_ digits: ArraySlice<UInt8>) -> UInt8? {
        var value = 0
        for digit in digits {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "7") else { return nil }
            value = value * 8 + Int(digit - UInt8(ascii: "0"))
        }
        return value <= 255 ? UInt8(value) : nil
    }
}
