import Shared

/// A validated systemd unit name, e.g. `muster-web-api.service` or `srv-muster-data.mount`.
///
/// Names Muster generates come from ``service(prefix:module:service:)`` (components from a safe alphabet) and
/// ``mount(where:)`` (systemd path escaping, as `systemd-escape --path --suffix=mount`). ``init(_:)`` accepts any
/// valid unit name (for units we only read).
struct UnitName: Sendable, Hashable, CustomStringConvertible, Comparable {
    let rawValue: String

    /// The longest unit name systemd accepts (`UNIT_NAME_MAX` - 1).
    static let maximumLength = 255
    /// The longest prefix, module or service component.
    static let maximumComponentLength = 64
    static let defaultPrefix = "muster"

    /// Unit types Muster handles.
    static let knownSuffixes: Set<String> = [
        "service", "mount", "socket", "target", "timer", "path", "slice", "scope", "automount", "swap", "device",
    ]

    /// The characters systemd allows in a unit name (`VALID_CHARS` plus `@` for templates and `\` for escapes).
    private static func isUnitNameByte(_ b: UInt8) -> Bool {
        isAlphanumeric(b) || b == UInt8(ascii: ":") || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
            || b == UInt8(ascii: ".") || b == UInt8(ascii: "\\") || b == UInt8(ascii: "@")
    }

    private static func isAlphanumeric(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
    }

    /// Validates an existing unit name.
    /// - Throws: ``MusterError`` `.invalidInput` naming the problem.
    init(_ name: String) throws {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= Self.maximumLength else {
            throw MusterError(.invalidInput, "unit name '\(name)' must be 1–\(Self.maximumLength) characters")
        }
        guard bytes.allSatisfy(Self.isUnitNameByte) else {
            throw MusterError(
                .invalidInput, "unit name '\(name)' contains a character outside [A-Za-z0-9:_.\\@-]")
        }
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex,
            Self.knownSuffixes.contains(String(name[name.index(after: dot)...]))
        else {
            throw MusterError(.invalidInput, "unit name '\(name)' has no known unit type suffix")
        }
        self.rawValue = name
    }

    private init(trusted: String) { self.rawValue = trusted }

    /// `<prefix>-<module>-<service>.service`.
    ///
    /// Each component must match `[a-z0-9]([a-z0-9_-]*[a-z0-9])?` and be at most 64 characters. Because `-` may
    /// occur inside components, two modules could map to the same name (`a-b`+`c` and `a`+`b-c`); the owner marker
    /// written by ``UnitFile`` catches that (``UnitWriter`` refuses to overwrite another owner's unit).
    /// - Throws: ``MusterError`` `.invalidInput` naming the component.
    static func service(prefix: String = defaultPrefix, module: String, service: String) throws -> UnitName {
        try validateComponent(prefix, field: "prefix")
        try validateComponent(module, field: "module name")
        try validateComponent(service, field: "service name")
        return try UnitName("\(prefix)-\(module)-\(service).service")
    }

    /// Checks one component of a generated name against the safe alphabet.
    static func validateComponent(_ value: String, field: String) throws {
        let bytes = Array(value.utf8)
        let inner: (UInt8) -> Bool = { b in
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
        }
        guard let first = bytes.first, let last = bytes.last, bytes.count <= maximumComponentLength,
            inner(first), inner(last),
            bytes.allSatisfy({ inner($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
        else {
            throw MusterError(
                .invalidInput,
                "\(field) '\(value)' must be 1–\(maximumComponentLength) characters from [a-z0-9_-], "
                    + "starting and ending with a letter or digit")
        }
    }

    /// The `.mount` unit name systemd requires for mount point `where` (`systemd-escape --path --suffix=mount`).
    static func mount(where path: String) throws -> UnitName {
        try UnitName(trusted: escapePath(path) + ".mount").checkedLength()
    }

    private func checkedLength() throws -> UnitName {
        guard rawValue.utf8.count <= Self.maximumLength else {
            throw MusterError(.invalidInput, "unit name for this path would exceed \(Self.maximumLength) characters")
        }
        return self
    }

    /// systemd's path escaping (`unit_name_path_escape`): the path is simplified (duplicate and trailing `/` and
    /// `.` components dropped), must be absolute and normalized (no `..`), `/` → `-` (the root is `-`), and every
    /// byte outside `[A-Za-z0-9:_.]` — and a leading `.` — becomes `\xNN`.
    /// - Throws: ``MusterError`` `.invalidInput` for relative or non-normalized paths.
    static func escapePath(_ path: String) throws -> String {
        guard path.hasPrefix("/") else {
            throw MusterError(.invalidInput, "mount path '\(path)' must be absolute")
        }
        guard !path.utf8.contains(0) else {
            throw MusterError(.invalidInput, "mount path contains a NUL byte")
        }
        var components: [Substring] = []
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            if component == "." { continue }
            if component == ".." {
                throw MusterError(.invalidInput, "mount path '\(path)' must not contain '..'")
            }
            components.append(component)
        }
        if components.isEmpty { return "-" }
        let simplified = Array(components.joined(separator: "/").utf8)
        var out = ""
        for (index, b) in simplified.enumerated() {
            if b == UInt8(ascii: "/") {
                out.append("-")
            } else if (index == 0 && b == UInt8(ascii: "."))
                || !(isAlphanumeric(b) || b == UInt8(ascii: ":") || b == UInt8(ascii: "_") || b == UInt8(ascii: "."))
            {
                out += "\\x" + hex(b)
            } else {
                out.append(Character(Unicode.Scalar(b)))
            }
        }
        return out
    }

    private static func hex(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 0xf)]])
    }

    /// The unit's D-Bus object path (`/org/freedesktop/systemd1/unit/` + the name with every byte outside
    /// `[A-Za-z0-9]` as `_xx`).
    var objectPath: String {
        // Same encoding as sd_bus_path_encode, done in Swift so it cannot fail.
        var out = "/org/freedesktop/systemd1/unit/"
        for b in rawValue.utf8 {
            if Self.isAlphanumeric(b) { out.append(Character(Unicode.Scalar(b))) } else { out += "_" + Self.hex(b) }
        }
        return out
    }

    /// `service`, `mount`, …
    var suffix: String {
        guard let dot = rawValue.lastIndex(of: ".") else { return "" }
        return String(rawValue[rawValue.index(after: dot)...])
    }

    var description: String { rawValue }

    static func < (lhs: UnitName, rhs: UnitName) -> Bool { lhs.rawValue < rhs.rawValue }
}
