/// A JSON Pointer (RFC 6901, `/repos/0/path`, `~1` = `/`, `~0` = `~`) where a segment `*` matches any member
/// name or array index (`/snapshots/*/path`). The empty pointer `""` names the whole document.
public struct JSONPointer: Hashable, Sendable, CustomStringConvertible {
    public enum Segment: Hashable, Sendable {
        case name(String)
        case any
    }

    public let segments: [Segment]
    public let description: String

    /// - Throws: ``MusterError`` `.invalidInput` for a pointer that does not start with `/` or has a bad `~` escape.
    public init(_ text: String) throws {
        description = text
        guard !text.isEmpty else {
            segments = []
            return
        }
        guard text.hasPrefix("/") else {
            throw MusterError(
                .invalidInput, "JSON pointer '\(text)' must start with '/' (RFC 6901), e.g. /repos/0/path")
        }
        var parsed: [Segment] = []
        for raw in text.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            if raw == "*" {
                parsed.append(.any)
                continue
            }
            var name = ""
            var iterator = raw.makeIterator()
            while let character = iterator.next() {
                guard character == "~" else {
                    name.append(character)
                    continue
                }
                switch iterator.next() {
                case "0": name.append("~")
                case "1": name.append("/")
                default:
                    throw MusterError(
                        .invalidInput, "JSON pointer '\(text)': '~' must be followed by 0 or 1 (RFC 6901)")
                }
            }
            parsed.append(.name(name))
        }
        segments = parsed
    }

    /// Whether the pointer names exactly `path` (member names compare as names, array indexes as their decimal).
    public func matches(_ path: [JSONScan.Step]) -> Bool {
        guard path.count == segments.count else { return false }
        for (segment, step) in zip(segments, path) {
            switch (segment, step) {
            case (.any, _): continue
            case (.name(let name), .key(let key)): if name != key { return false }
            case (.name(let name), .index(let index)): if name != String(index) { return false }
            }
        }
        return true
    }

    /// The steps of a pointer without wildcards into objects only (for config keys that may not exist yet).
    public var objectPath: [JSONScan.Step]? {
        var steps: [JSONScan.Step] = []
        for segment in segments {
            guard case .name(let name) = segment else { return nil }
            steps.append(.key(name))
        }
        return steps
    }
}

/// Rewrites absolute paths from one prefix to another on path-segment boundaries: `/srv/app/golden-repos`
/// rewrites `/srv/app/golden-repos` and `/srv/app/golden-repos/x`, never `/srv/app/golden-repos-archive`.
public struct PathPrefixRewrite: Codable, Hashable, Sendable {
    public var from: String
    public var to: String

    public init(from: String, to: String) {
        self.from = from
        self.to = to
    }

    /// Checks both sides: absolute, no `..` segment, no NUL; a trailing `/` is ignored.
    public func validated(field: String) throws -> PathPrefixRewrite {
        for (side, value) in [("from", from), ("to", to)] {
            guard value.hasPrefix("/") else {
                throw MusterError(.invalidInput, "\(field).\(side): '\(value)' is not an absolute path")
            }
            guard !value.split(separator: "/").contains(".."), !value.contains("\u{0}") else {
                throw MusterError(.invalidInput, "\(field).\(side): '\(value)' contains '..' or a NUL byte")
            }
        }
        return PathPrefixRewrite(from: Self.trimmed(from), to: Self.trimmed(to))
    }

    /// The rewritten path, or `nil` when `path` is not under `from`. A path already under `to` is left alone, so
    /// running a rewrite twice equals running it once even when `to` lies below `from`.
    public func apply(to path: String) -> String? {
        let from = Self.trimmed(from)
        let to = Self.trimmed(to)
        if Self.isUnder(path, to) && to != from { return nil }
        guard Self.isUnder(path, from) else { return nil }
        if from == "/" { return to == "/" ? path : to + path }
        return to + path.dropFirst(from.count)
    }

    static func isUnder(_ path: String, _ prefix: String) -> Bool {
        if prefix == "/" { return path.hasPrefix("/") }
        return path == prefix || path.hasPrefix(prefix + "/")
    }

    static func trimmed(_ path: String) -> String {
        var path = path
        while path.count > 1, path.hasSuffix("/") { path.removeLast() }
        return path
    }
}
