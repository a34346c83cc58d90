import Foundation
import Shared
import Yams

#if canImport(Glibc)
    import Glibc
#endif

/// `editConfig`: switches a service's config file to cluster mode by setting keys, after checking that it holds
/// what the profile expects (e.g. `"storage_mode": "sqlite"`).
///
/// Formats: `json` (edited in place, byte-preserving: only the changed values are replaced, missing members are
/// appended to their object), `yaml` (line-preserving: comments and order stay; block mappings only, the result is
/// re-read and checked), `env` (`KEY=VALUE` lines, `export` allowed, comments kept). Keys are JSON pointers
/// (`/database/url`) or plain top-level names (`storage_mode`).
///
/// The original is kept as `<file><backupSuffix>` (written once; a re-run keeps it). When every key already has
/// its new value the task is a no-op (a re-run after success); otherwise an `expect` mismatch refuses the edit with
/// the key, the expected and the found value, changing nothing. `restore: true` puts the backup back (rollback).
///
/// Spec: `{"file": "/etc/app/config.json", "format": "json", "expect": {"storage_mode": "sqlite"},
/// "set": {"storage_mode": "postgres", "/database/url": "postgres://…"}, "backupSuffix": ".pre-cluster"}`.
public struct EditConfig: TaskHandler {
    public enum Format: String, Codable, Sendable {
        case json, yaml, env
    }

    public struct Spec: Codable, Sendable, Equatable {
        public var file: String
        public var format: Format
        public var expect: [String: JSONValue]?
        public var set: [String: JSONValue]
        public var backupSuffix: String?
        public var dryRun: Bool?
        public var restore: Bool?

        public init(
            file: String, format: Format, expect: [String: JSONValue]? = nil, set: [String: JSONValue],
            backupSuffix: String? = nil, dryRun: Bool? = nil, restore: Bool? = nil
        ) {
            self.file = file
            self.format = format
            self.expect = expect
            self.set = set
            self.backupSuffix = backupSuffix
            self.dryRun = dryRun
            self.restore = restore
        }
    }

    public struct Report: Codable, Sendable, Equatable {
        public var file: String
        /// Keys whose value changed (empty: nothing to do).
        public var changed: [String]
        public var backup: String?
        public var dryRun: Bool
        public var restored: Bool
    }

    public init() {}

    public func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        try JSONValue(encoding: try apply(try spec.decode(Spec.self)))
    }

    public func apply(_ spec: Spec) throws -> Report {
        let suffix = try BackedUpFile.suffix(spec.backupSuffix)
        let backup = spec.file + suffix
        let bytes = try BackedUpFile.read(spec.file)
        if spec.restore == true {
            let changed = try BackedUpFile.restore(spec.file, suffix: suffix, dryRun: spec.dryRun == true)
            return Report(
                file: spec.file, changed: changed == true ? ["(restored)"] : [], backup: changed == nil ? nil : backup,
                dryRun: spec.dryRun == true, restored: true)
        }

        let document: any ConfigDocument
        switch spec.format {
        case .json: document = try JSONConfig(bytes: bytes, file: spec.file)
        case .yaml: document = try YAMLConfig(bytes: bytes, file: spec.file)
        case .env: document = try EnvConfig(bytes: bytes, file: spec.file)
        }
        let keys = try spec.set.keys.sorted().map { ($0, try ConfigKey($0)) }
        let pending = keys.filter { document.value(at: $0.1) != spec.set[$0.0] }
        guard !pending.isEmpty else {
            return Report(file: spec.file, changed: [], backup: nil, dryRun: spec.dryRun == true, restored: false)
        }
        for (name, expected) in (spec.expect ?? [:]).sorted(by: { $0.key < $1.key }) {
            let found = document.value(at: try ConfigKey(name))
            guard found == expected else {
                throw MusterError(
                    .conflict,
                    "\(spec.file): \(name) is \(found.map(ConfigKey.render) ?? "missing"), the profile expects "
                        + "\(ConfigKey.render(expected)); the file was not changed",
                    hint: "is this server already in cluster mode, or is the profile's config.expect wrong?")
            }
        }
        var edited = document
        for (name, key) in pending {
            try edited.set(key, to: spec.set[name]!)
        }
        let output = edited.bytes
        // The edit must read back as intended whatever the format's quirks.
        let check: any ConfigDocument
        switch spec.format {
        case .json: check = try JSONConfig(bytes: output, file: spec.file)
        case .yaml: check = try YAMLConfig(bytes: output, file: spec.file)
        case .env: check = try EnvConfig(bytes: output, file: spec.file)
        }
        for (name, key) in keys where check.value(at: key) != spec.set[name] {
            throw MusterError(
                .internal, "\(spec.file): setting \(name) did not read back as intended; the file was not changed")
        }
        if spec.dryRun != true {
            try BackedUpFile.replace(spec.file, original: bytes, with: output, suffix: suffix)
        }
        return Report(
            file: spec.file, changed: pending.map(\.0), backup: backup, dryRun: spec.dryRun == true, restored: false)
    }
}

/// A config key: a JSON pointer or a plain top-level name.
struct ConfigKey: Sendable {
    var names: [String]

    init(_ text: String) throws {
        if text.hasPrefix("/") {
            guard let path = try JSONPointer(text).objectPath, !path.isEmpty else {
                throw MusterError(.invalidInput, "config key '\(text)': wildcards and the empty pointer are not keys")
            }
            names = path.map(\.description)
        } else {
            guard !text.isEmpty else { throw MusterError(.invalidInput, "config key must not be empty") }
            names = [text]
        }
    }

    /// `value` as compact JSON (no escaped slashes, sorted keys), which is also a valid YAML flow value.
    static func render(_ value: JSONValue) -> String {
        if case .string(let string) = value { return JSONScan.encode(string: string) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "\(value)"
    }
}

protocol ConfigDocument: Sendable {
    var bytes: [UInt8] { get }
    func value(at key: ConfigKey) -> JSONValue?
    mutating func set(_ key: ConfigKey, to value: JSONValue) throws
}

// MARK: - JSON

struct JSONConfig: ConfigDocument {
    private(set) var bytes: [UInt8]
    let file: String

    init(bytes: [UInt8], file: String) throws {
        self.bytes = bytes
        self.file = file
        do {
            _ = try JSONScan(bytes)
        } catch let error as MusterError {
            throw MusterError(.invalidInput, "\(file): \(error.message); the file was not changed")
        }
    }

    func value(at key: ConfigKey) -> JSONValue? {
        guard let scan = try? JSONScan(bytes), let range = scan.values[key.names.map { .key($0) }] else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: Data(bytes[range]))
    }

    mutating func set(_ key: ConfigKey, to value: JSONValue) throws {
        let scan = try JSONScan(bytes)
        let literal = ConfigKey.render(value)
        let path = key.names.map { JSONScan.Step.key($0) }
        if let range = scan.values[path] {
            bytes = JSONScan.splice(bytes, [(range, literal)])
            return
        }
        // Find the deepest existing object on the path and append the rest there.
        var depth = path.count - 1
        while depth >= 0, scan.objects[Array(path[..<depth])] == nil {
            if scan.values[Array(path[..<depth])] != nil {
                throw MusterError(
                    .invalidInput,
                    "\(file): cannot set /\(key.names.joined(separator: "/")): /\(key.names[..<depth].joined(separator: "/")) is not an object"
                )
            }
            depth -= 1
        }
        guard depth >= 0, let parent = scan.objects[Array(path[..<depth])] else {
            throw MusterError(.invalidInput, "\(file): the document is not a JSON object")
        }
        var member = literal
        for name in key.names[(depth + 1)...].reversed() {
            member = "{\(JSONScan.encode(string: name)): \(member)}"
        }
        member = "\(JSONScan.encode(string: key.names[depth])): \(member)"
        let text: String
        if parent.memberIndent.isEmpty {
            text = parent.isEmpty ? member : ", \(member)"
        } else {
            text = ",\n\(parent.memberIndent)\(member)"
        }
        // Insert right after the last member (before any whitespace preceding the closing brace).
        var insertAt = parent.closingBrace
        if !parent.isEmpty {
            while insertAt > 0, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[insertAt - 1]) { insertAt -= 1 }
        }
        bytes = JSONScan.splice(bytes, [(insertAt..<insertAt, text)])
    }
}

// MARK: - Line-based formats

/// A UTF-8 text file as lines, written back exactly as read apart from edited lines (final newline kept or not).
struct TextLines: Sendable {
    var lines: [String]
    let trailingNewline: Bool

    init(_ bytes: [UInt8], file: String) throws {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw MusterError(.invalidInput, "\(file): not UTF-8 text; the file was not changed")
        }
        // An empty file gets a final newline once lines are added to it.
        trailingNewline = text.isEmpty || text.hasSuffix("\n")
        var split = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if trailingNewline { split.removeLast() }
        lines = split
    }

    var bytes: [UInt8] { Array((lines.joined(separator: "\n") + (trailingNewline ? "\n" : "")).utf8) }
}

// MARK: - YAML

/// Line-preserving edits of block-mapping YAML: `key: value` lines are found by indentation, their value replaced;
/// a missing key is appended to its parent mapping.
struct YAMLConfig: ConfigDocument {
    private var text: TextLines
    let file: String

    var bytes: [UInt8] { text.bytes }

    init(bytes: [UInt8], file: String) throws {
        self.file = file
        text = try TextLines(bytes, file: file)
        do {
            _ = try Yams.compose(yaml: text.lines.joined(separator: "\n"))
        } catch {
            throw MusterError(.invalidInput, "\(file): not valid YAML (\(error)); the file was not changed")
        }
    }

    func value(at key: ConfigKey) -> JSONValue? {
        guard let node = try? Yams.compose(yaml: text.lines.joined(separator: "\n")) else { return nil }
        var current = node
        for name in key.names {
            guard let next = current.mapping?[Node(name)] else { return nil }
            current = next
        }
        return Self.json(current)
    }

    static func json(_ node: Node) -> JSONValue? {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain {
                if let bool = node.bool { return .bool(bool) }
                if let int = node.int { return .number(Double(int)) }
                if let double = node.float { return .number(double) }
                if node.null != nil { return .null }
            }
            return .string(scalar.string)
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, value) in mapping {
                guard let name = key.string, let converted = json(value) else { return nil }
                object[name] = converted
            }
            return .object(object)
        case .sequence(let sequence):
            let values = sequence.compactMap(json)
            return values.count == sequence.count ? .array(values) : nil
        case .alias:
            return nil
        }
    }

    mutating func set(_ key: ConfigKey, to value: JSONValue) throws {
        let literal = try Self.literal(value, file: file)
        var start = 0
        var end = text.lines.count
        var indent = 0
        for (depth, name) in key.names.enumerated() {
            let last = depth == key.names.count - 1
            guard let index = findKey(name, in: start..<end, indent: indent) else {
                // Append the rest of the path at the end of this block.
                var insertAt = end
                while insertAt > start, Self.isBlank(text.lines[insertAt - 1]) { insertAt -= 1 }
                var added: [String] = []
                for (offset, rest) in key.names[depth...].enumerated() {
                    let pad = String(repeating: " ", count: indent + 2 * offset)
                    let isLeaf = depth + offset == key.names.count - 1
                    added.append(isLeaf ? "\(pad)\(Self.keyText(rest)): \(literal)" : "\(pad)\(Self.keyText(rest)):")
                }
                text.lines.insert(contentsOf: added, at: insertAt)
                return
            }
            let line = text.lines[index]
            if last {
                let prefix = line.prefix(while: { $0 == " " }) + Self.keyText(name) + ":"
                text.lines[index] = "\(prefix) \(literal)"
                // Drop the old value's continuation text.lines (a nested block or a multi-line scalar).
                var next = index + 1
                while next < end, Self.isContinuation(text.lines[next], deeperThan: indent) { next += 1 }
                text.lines.removeSubrange((index + 1)..<next)
                return
            }
            // Descend into the child block.
            var childEnd = index + 1
            while childEnd < end, Self.isContinuation(text.lines[childEnd], deeperThan: indent) { childEnd += 1 }
            let childIndent =
                text.lines[(index + 1)..<childEnd].first(where: { !Self.isBlank($0) }).map { Self.indentOf($0) }
                ?? indent + 2
            guard childIndent > indent else {
                throw MusterError(.invalidInput, "\(file): cannot edit \(name): it is not a block mapping")
            }
            start = index + 1
            end = childEnd
            indent = childIndent
        }
    }

    private func findKey(_ name: String, in range: Range<Int>, indent: Int) -> Int? {
        let candidates = [Self.keyText(name) + ":", "\"\(name)\":", "'\(name)':"]
        for index in range {
            let line = text.lines[index]
            guard Self.indentOf(line) == indent else { continue }
            let body = line.dropFirst(indent)
            for candidate in candidates where body.hasPrefix(candidate) {
                let rest = body.dropFirst(candidate.count)
                if rest.isEmpty || rest.first == " " || rest.first == "\t" { return index }
            }
        }
        return nil
    }

    static func keyText(_ name: String) -> String {
        let plain = name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." }
        return plain && !name.isEmpty ? name : "\"\(name.replacingOccurrences(of: "\"", with: "\\\""))\""
    }

    static func literal(_ value: JSONValue, file: String) throws -> String {
        switch value {
        case .string, .bool, .number, .null:
            // JSON scalars are valid YAML flow scalars with the same meaning.
            return ConfigKey.render(value)
        case .array, .object:
            return ConfigKey.render(value)  // flow style: JSON is YAML
        }
    }

    static func indentOf(_ line: String) -> Int { line.prefix(while: { $0 == " " }).count }
    static func isBlank(_ line: String) -> Bool {
        line.allSatisfy { $0 == " " || $0 == "\t" } || line.drop(while: { $0 == " " }).hasPrefix("#")
    }
    static func isContinuation(_ line: String, deeperThan indent: Int) -> Bool {
        isBlank(line) || indentOf(line) > indent
    }
}

// MARK: - env

/// `KEY=VALUE` files (systemd `EnvironmentFile=`, docker `.env`): comments, blank lines and order are kept.
struct EnvConfig: ConfigDocument {
    private var text: TextLines
    let file: String

    var bytes: [UInt8] { text.bytes }

    init(bytes: [UInt8], file: String) throws {
        self.file = file
        text = try TextLines(bytes, file: file)
        for (number, line) in text.lines.enumerated() where Self.parse(line) == nil && !Self.isComment(line) {
            throw MusterError(
                .invalidInput,
                "\(file) line \(number + 1): expected KEY=VALUE, found '\(line)'; the file was not changed")
        }
    }

    static func isComment(_ line: String) -> Bool {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        return trimmed.isEmpty || trimmed.hasPrefix("#")
    }

    static func parse(_ line: String) -> (key: String, value: String)? {
        var body = Substring(line.trimmingCharacters(in: .whitespaces))
        if body.hasPrefix("export ") { body = body.dropFirst(7).drop(while: { $0 == " " }) }
        guard let equals = body.firstIndex(of: "=") else { return nil }
        let key = String(body[..<equals])
        guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return nil }
        var value = String(body[body.index(after: equals)...])
        if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
            value = String(value.dropFirst().dropLast())
            if first == "\"" {
                value = value.replacingOccurrences(of: "\\\"", with: "\"").replacingOccurrences(of: "\\\\", with: "\\")
            }
        }
        return (key, value)
    }

    func value(at key: ConfigKey) -> JSONValue? {
        guard key.names.count == 1 else { return nil }
        for line in text.lines.reversed() {
            if let entry = Self.parse(line), entry.key == key.names[0] { return .string(entry.value) }
        }
        return nil
    }

    mutating func set(_ key: ConfigKey, to value: JSONValue) throws {
        guard key.names.count == 1 else {
            throw MusterError(
                .invalidInput, "\(file): env files have no nested keys (/\(key.names.joined(separator: "/")))")
        }
        let plain: String
        switch value {
        case .string(let string): plain = string
        case .bool(let bool): plain = bool ? "true" : "false"
        case .number(let number): plain = number.rounded() == number ? String(Int64(number)) : String(number)
        case .null, .array, .object:
            throw MusterError(.invalidInput, "\(file): \(key.names[0]) must be set to a string, number or boolean")
        }
        guard !plain.contains("\n"), !plain.contains("\u{0}") else {
            throw MusterError(.invalidInput, "\(file): the value of \(key.names[0]) must not contain a newline or NUL")
        }
        let needsQuotes = plain.contains { " \t#\"'$\\`".contains($0) } || plain.isEmpty
        let rendered =
            needsQuotes
            ? "\"" + plain.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                + "\""
            : plain
        if let index = text.lines.lastIndex(where: { Self.parse($0)?.key == key.names[0] }) {
            let exported = text.lines[index].trimmingCharacters(in: .whitespaces).hasPrefix("export ")
            text.lines[index] = "\(exported ? "export " : "")\(key.names[0])=\(rendered)"
        } else {
            text.lines.append("\(key.names[0])=\(rendered)")
        }
    }
}
