#if canImport(Glibc)
    import Glibc
#endif

/// Decides which relative paths rsync's `--exclude` patterns leave out, so the precheck and the verification
/// look at the same set of files rsync copies.
///
/// Supported (the common subset of rsync's filter rules): a pattern without `/` matches a name at any depth;
/// a leading `/` anchors it at the source root; a trailing `/` matches directories only; a pattern with an
/// inner `/` matches the tail of the path from a component boundary; `*`, `?`, `[…]` as in fnmatch(3), `**`
/// also crossing `/`. An excluded directory excludes everything below it. Filter-rule prefixes (`- `, `+ `)
/// and include patterns are not interpreted.
struct ExcludeMatcher: Sendable {
    private struct Pattern: Sendable {
        var glob: [UInt8]
        var anchored: Bool
        var directoryOnly: Bool
        var matchesWholePath: Bool
        var crossesSlashes: Bool
    }

    private let patterns: [Pattern]

    init(_ patterns: [String]) {
        self.patterns = patterns.map { text in
            var glob = Array(text.utf8)
            let directoryOnly = glob.last == UInt8(ascii: "/")
            while glob.last == UInt8(ascii: "/") { glob.removeLast() }
            let anchored = glob.first == UInt8(ascii: "/")
            while glob.first == UInt8(ascii: "/") { glob.removeFirst() }
            let crosses = text.contains("**")
            return Pattern(
                glob: glob + [0], anchored: anchored, directoryOnly: directoryOnly,
                matchesWholePath: anchored || glob.contains(UInt8(ascii: "/")), crossesSlashes: crosses)
        }
    }

    var isEmpty: Bool { patterns.isEmpty }

    /// Whether `path` (relative, `/`-separated) is excluded itself; ancestors are the caller's business (the
    /// walk skips below an excluded directory).
    func excludes(_ path: [UInt8], isDirectory: Bool) -> Bool {
        guard !patterns.isEmpty else { return false }
        for pattern in patterns where !pattern.directoryOnly || isDirectory {
            let flags: Int32 = pattern.crossesSlashes ? 0 : FNM_PATHNAME
            if !pattern.matchesWholePath {
                let name = path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).last ?? []
                if Self.fnmatch(pattern.glob, Array(name) + [0], flags) { return true }
                continue
            }
            if pattern.anchored {
                if Self.fnmatch(pattern.glob, path + [0], flags) { return true }
                continue
            }
            // Unanchored with a slash: try every suffix that starts at a component boundary.
            var start = 0
            while start <= path.count {
                if Self.fnmatch(pattern.glob, Array(path[start...]) + [0], flags) { return true }
                guard let slash = path[start...].firstIndex(of: UInt8(ascii: "/")) else { break }
                start = slash + 1
            }
        }
        return false
    }

    private static func fnmatch(_ pattern: [UInt8], _ name: [UInt8], _ flags: Int32) -> Bool {
        TreeWalker.withCString(pattern) { cPattern in
            TreeWalker.withCString(name) { cName in Glibc.fnmatch(cPattern, cName, flags) == 0 }
        }
    }
}
