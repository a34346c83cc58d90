import Shared

/// What to copy where: the value the `syncTree` task will carry and `muster-agent sync` builds from flags.
///
/// Both paths are directories; the destination becomes a copy of the source's *contents* (rsync's `SRC/ DEST/`).
struct SyncSpec: Sendable, Equatable, Codable {
    /// After-copy check of the destination against the source.
    enum Verify: String, Sendable, Equatable, Codable, CaseIterable {
        /// No check beyond rsync's exit code.
        case none
        /// File list, kinds, sizes, modes, owners and symlink targets of every entry, plus the sha256 of a
        /// deterministic sample of regular files (see ``SyncVerifier``).
        case sample
        /// As `sample`, with the sha256 of every regular file.
        case full
    }

    var source: String
    var destination: String
    /// Pass `--delete`: remove destination entries the source does not have. Off unless asked.
    var delete: Bool = false
    /// rsync `--exclude` patterns, in order.
    var excludes: [String] = []
    var verify: Verify = .none

    /// Checks both paths: absolute, no `..` component, not the same directory, neither inside the other.
    /// - Throws: ``MusterError`` with code `usage` naming the bad path.
    func validate() throws {
        for (name, path) in [("source", source), ("destination", destination)] {
            guard path.hasPrefix("/") else {
                throw MusterError(
                    .usage, "the \(name) '\(path)' is not an absolute path", hint: "give a path starting with /")
            }
            if path.split(separator: "/").contains("..") {
                throw MusterError(
                    .usage, "the \(name) '\(path)' contains a '..' component", hint: "give the path without '..'")
            }
            if path.contains("\0") { throw MusterError(.usage, "the \(name) path contains a NUL byte") }
        }
        let src = Self.normalized(source)
        let dst = Self.normalized(destination)
        if src == dst { throw MusterError(.usage, "source and destination are the same directory '\(src)'") }
        if dst.hasPrefix(src == "/" ? "/" : src + "/") {
            throw MusterError(
                .usage, "the destination '\(dst)' is inside the source '\(src)'",
                hint: "copy to a directory outside the source")
        }
        if src.hasPrefix(dst == "/" ? "/" : dst + "/") {
            throw MusterError(
                .usage, "the source '\(src)' is inside the destination '\(dst)'",
                hint: "copy to a directory that does not contain the source")
        }
        for pattern in excludes where pattern.isEmpty || pattern.contains("\n") {
            throw MusterError(.usage, "exclude pattern '\(pattern)' is empty or contains a newline")
        }
    }

    /// `path` without repeated, `.` or trailing slashes.
    static func normalized(_ path: String) -> String {
        let parts = path.split(separator: "/").filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }
}
