import Foundation
import Yams

/// A module's `module.yaml` (DESIGN §5): what to run from a module image and how.
///
/// ```yaml
/// name: web                    # [a-z0-9][a-z0-9-]{0,62}
/// version: 1.4.2               # [A-Za-z0-9][A-Za-z0-9._+-]{0,63}
/// sandbox: default             # default | strict | trusted (as portablectl's profiles)
/// services:
///   - name: api
///     exec: [/bin/api, --port, "8080"]   # argv; exec[0] is an absolute path inside the module's rootfs/
///     env: { LOG_LEVEL: info }
///     user: www-data
///     type: notify             # simple | exec | notify | oneshot            (default simple)
///     restart: on-failure      # no | on-success | on-failure | on-abnormal | on-watchdog | on-abort | always
///     restartSec: 2s           # integer seconds or <n>ms|s|min|h             (default on-failure / unset)
///     watchdogSec: 10s
///     after: [db]              # services of this module only
///     requires: [db]
///     healthCheck: { http: "http://127.0.0.1:8080/healthz", interval: 10s, timeout: 2s }
///     readWritePaths: [/var/lib/web]
/// volumes:
///   data: /var/lib/web         # volume name → mount path
/// ```
///
/// ``parse(yaml:file:)`` checks the shape (types, known keys, known values) and
/// ``validate(file:lines:tree:)`` the meaning (alphabets, paths, references, cycles); both report every
/// problem as a ``Issue`` naming the file, the field (`services[1].exec[0]`) and the reason.
///
/// The `Codable` form (used in the signed ``ModuleDescriptor``) has the same keys as the YAML file.
public struct ModuleManifest: Codable, Sendable, Equatable {
    public var name: String
    public var version: String
    public var sandbox: SandboxProfile
    public var services: [Service]
    public var volumes: [Volume]

    public init(
        name: String, version: String, sandbox: SandboxProfile = .default, services: [Service] = [],
        volumes: [Volume] = []
    ) {
        self.name = name
        self.version = version
        self.sandbox = sandbox
        self.services = services
        self.volumes = volumes
    }

    /// The hardening applied to every unit of the module, named like portablectl's profiles.
    public enum SandboxProfile: String, Codable, Sendable, CaseIterable {
        case `default`
        case strict
        case trusted
    }

    /// systemd's `Type=`, restricted to the types a module service may use.
    public enum ServiceType: String, Codable, Sendable, CaseIterable {
        case simple
        case exec
        case notify
        case oneshot
    }

    /// systemd's `Restart=`.
    public enum RestartPolicy: String, Codable, Sendable, CaseIterable {
        case no
        case onSuccess = "on-success"
        case onFailure = "on-failure"
        case onAbnormal = "on-abnormal"
        case onWatchdog = "on-watchdog"
        case onAbort = "on-abort"
        case always
    }

    /// One service of the module; becomes the unit `<prefix>-<module>-<service>.service`.
    public struct Service: Codable, Sendable, Equatable {
        public var name: String
        /// argv; `exec[0]` is an absolute path inside the module tree.
        public var exec: [String]
        /// Environment variables (YAML key `env`).
        public var environment: [String: String]
        public var user: String?
        public var type: ServiceType
        public var restart: RestartPolicy
        public var restartSec: TimeSpan?
        public var watchdogSec: TimeSpan?
        /// Services of this module to start before this one.
        public var after: [String]
        /// Services of this module this one needs.
        public var requires: [String]
        public var healthCheck: HealthCheck?
        /// Host paths the service may write to (everything else is read-only under the sandbox profiles).
        public var readWritePaths: [String]

        public init(
            name: String, exec: [String], environment: [String: String] = [:], user: String? = nil,
            type: ServiceType = .simple, restart: RestartPolicy = Service.defaultRestart,
            restartSec: TimeSpan? = nil, watchdogSec: TimeSpan? = nil, after: [String] = [], requires: [String] = [],
            healthCheck: HealthCheck? = nil, readWritePaths: [String] = []
        ) {
            self.name = name
            self.exec = exec
            self.environment = environment
            self.user = user
            self.type = type
            self.restart = restart
            self.restartSec = restartSec
            self.watchdogSec = watchdogSec
            self.after = after
            self.requires = requires
            self.healthCheck = healthCheck
            self.readWritePaths = readWritePaths
        }

        /// `Restart=` when the manifest does not say: a cluster service should come back after a crash.
        public static let defaultRestart = RestartPolicy.onFailure

        enum CodingKeys: String, CodingKey {
            case name, exec, user, type, restart, restartSec, watchdogSec, after, requires, healthCheck
            case readWritePaths
            case environment = "env"
        }
    }

    /// How the agent checks a running service beyond systemd's own state. Exactly one of ``http`` and ``exec``.
    public struct HealthCheck: Codable, Sendable, Equatable {
        /// An `http://` or `https://` URL that must answer 2xx.
        public var http: String?
        /// argv of a command (inside the module) that must exit 0.
        public var exec: [String]?
        public var interval: TimeSpan
        public var timeout: TimeSpan

        public static let defaultInterval = TimeSpan(milliseconds: 10_000)
        public static let defaultTimeout = TimeSpan(milliseconds: 2_000)

        public init(
            http: String? = nil, exec: [String]? = nil, interval: TimeSpan = Self.defaultInterval,
            timeout: TimeSpan = Self.defaultTimeout
        ) {
            self.http = http
            self.exec = exec
            self.interval = interval
            self.timeout = timeout
        }
    }

    /// A volume the module expects, mounted at `path` (DESIGN §6).
    public struct Volume: Codable, Sendable, Equatable {
        public var name: String
        public var path: String

        public init(name: String, path: String) {
            self.name = name
            self.path = path
        }
    }
}

// MARK: - TimeSpan

/// A duration as systemd spells it, kept in milliseconds.
///
/// In YAML an integer means seconds (`restartSec: 5`); a string is `<n>` (seconds) or `<n>ms|s|sec|m|min|h`.
/// Encoded (descriptor JSON, unit files) as `<n>ms`, which systemd accepts for every `…Sec=` setting.
public struct TimeSpan: Codable, Sendable, Equatable, Hashable, CustomStringConvertible {
    public var milliseconds: UInt64

    /// One week: longer restart or watchdog intervals are certainly mistakes.
    public static let maximum = TimeSpan(milliseconds: 7 * 24 * 3600 * 1000)

    public init(milliseconds: UInt64) { self.milliseconds = milliseconds }

    /// Parses `5`, `5s`, `500ms`, `2min`, `1h`; `nil` for anything else or anything above ``maximum``.
    public init?(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 12, let value = UInt64(digits) else { return nil }
        let factor: UInt64
        switch trimmed.dropFirst(digits.count) {
        case "", "s", "sec": factor = 1000
        case "ms", "msec": factor = 1
        case "m", "min": factor = 60_000
        case "h", "hr": factor = 3_600_000
        default: return nil
        }
        let (ms, overflow) = value.multipliedReportingOverflow(by: factor)
        guard !overflow, ms <= Self.maximum.milliseconds else { return nil }
        self.milliseconds = ms
    }

    /// The span as a `Duration` (for unit-file writers that take one).
    public var duration: Duration { .milliseconds(Int64(milliseconds)) }

    /// `<n>ms`, as systemd reads it.
    public var description: String { "\(milliseconds)ms" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let span = TimeSpan(parsing: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a time span: \(text)")
        }
        self = span
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

// MARK: - Issues

extension ModuleManifest {
    /// One problem with a manifest or module tree: which file, which field, why.
    public struct Issue: Sendable, Equatable, CustomStringConvertible {
        /// The file (`…/module.yaml`, or `…/rootfs` for problems in the tree).
        public var file: String
        /// The field path (`services[1].exec[0]`), or the path inside the tree (`/bin/tool`).
        public var field: String
        public var reason: String
        /// The 1-based line in `file`, when known.
        public var line: Int?

        public init(file: String, field: String, reason: String, line: Int? = nil) {
            self.file = file
            self.field = field
            self.reason = reason
            self.line = line
        }

        public var description: String {
            let location = line.map { "\(file):\($0)" } ?? file
            return field.isEmpty ? "\(location): \(reason)" : "\(location): \(field): \(reason)"
        }
    }

    /// Everything wrong with a module, in file order; thrown by parsing, validation and the builder.
    public struct ValidationError: Error, Sendable, CustomStringConvertible {
        public var issues: [Issue]

        public init(issues: [Issue]) { self.issues = issues }

        public var description: String {
            (["module is invalid (\(issues.count) problem\(issues.count == 1 ? "" : "s")):"]
                + issues.map { "  \($0)" }).joined(separator: "\n")
        }

        /// The operator-facing error (`.invalidInput`, exit code 1).
        public var musterError: MusterError {
            MusterError(
                .invalidInput, description, hint: "fix the fields named above; docs/modules.md lists every rule",
                cause: self)
        }
    }
}

// MARK: - Parsing

extension ModuleManifest {
    /// The result of parsing: the manifest and the line of every field, for ``validate(file:lines:tree:)``.
    public struct Parsed: Sendable {
        public var manifest: ModuleManifest
        /// Field path → 1-based line in the YAML file.
        public var lines: [String: Int]
    }

    /// Parses `module.yaml` text, checking types, keys and enumerated values (not the meaning; see
    /// ``validate(file:lines:tree:)``).
    ///
    /// Unknown keys are errors, so a misspelt `restartsec` is not silently ignored.
    ///
    /// - Parameters:
    ///   - yaml: The file's contents.
    ///   - file: The file's path, for the issues.
    /// - Throws: ``ValidationError`` listing every problem found.
    public static func parse(yaml: String, file: String) throws -> Parsed {
        var reader = ManifestYAMLReader(file: file)
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ValidationError(issues: [Issue(file: file, field: "", reason: "not valid YAML: \(error)")])
        }
        guard let root else {
            throw ValidationError(issues: [Issue(file: file, field: "", reason: "the file is empty")])
        }
        let manifest = reader.manifest(root)
        guard reader.issues.isEmpty, let manifest else { throw ValidationError(issues: reader.issues) }
        return Parsed(manifest: manifest, lines: reader.lines)
    }
}

/// Walks the YAML node tree of a manifest, recording issues with field paths and lines instead of stopping at
/// the first one (which `Decodable` would do, and without unknown-key checks).
struct ManifestYAMLReader {
    let file: String
    var issues: [ModuleManifest.Issue] = []
    var lines: [String: Int] = [:]

    init(file: String) { self.file = file }

    mutating func manifest(_ node: Node) -> ModuleManifest? {
        guard
            let fields = mapping(
                node, "", allowed: ["name", "version", "sandbox", "services", "volumes"], required: ["name", "version"])
        else { return nil }
        let name = fields["name"].flatMap { string($0, "name") }
        let version = fields["version"].flatMap { string($0, "version") }
        let sandbox = fields["sandbox"].flatMap { enumeration($0, "sandbox", ModuleManifest.SandboxProfile.self) }
        var services: [ModuleManifest.Service] = []
        if let node = fields["services"], let items = sequence(node, "services", what: "a list of services") {
            for (index, item) in items.enumerated() {
                if let service = service(item, "services[\(index)]") { services.append(service) }
            }
        }
        var volumes: [ModuleManifest.Volume] = []
        if let node = fields["volumes"], let pairs = pairs(node, "volumes", what: "a mapping of volume name to path") {
            for (key, value) in pairs {
                if let path = string(value, "volumes.\(key)") { volumes.append(.init(name: key, path: path)) }
            }
        }
        guard let name, let version else { return nil }
        return ModuleManifest(
            name: name, version: version, sandbox: sandbox ?? .default, services: services,
            volumes: volumes)
    }

    private mutating func service(_ node: Node, _ field: String) -> ModuleManifest.Service? {
        let allowed: Set<String> = [
            "name", "exec", "env", "user", "type", "restart", "restartSec", "watchdogSec", "after", "requires",
            "healthCheck", "readWritePaths",
        ]
        guard let fields = mapping(node, field, allowed: allowed, required: ["name", "exec"]) else { return nil }
        let name = fields["name"].flatMap { string($0, "\(field).name") }
        let exec = fields["exec"].flatMap { stringList($0, "\(field).exec", what: "a list of strings (argv)") }
        var environment: [String: String] = [:]
        if let node = fields["env"], let pairs = pairs(node, "\(field).env", what: "a mapping of variable to value") {
            for (key, value) in pairs {
                if let text = string(value, "\(field).env.\(key)", allowEmpty: true) { environment[key] = text }
            }
        }
        let user = fields["user"].flatMap { string($0, "\(field).user") }
        let type = fields["type"].flatMap { enumeration($0, "\(field).type", ModuleManifest.ServiceType.self) }
        let restart = fields["restart"].flatMap {
            enumeration($0, "\(field).restart", ModuleManifest.RestartPolicy.self)
        }
        let restartSec = fields["restartSec"].flatMap { timeSpan($0, "\(field).restartSec") }
        let watchdogSec = fields["watchdogSec"].flatMap { timeSpan($0, "\(field).watchdogSec") }
        let after = fields["after"].flatMap { stringList($0, "\(field).after", what: "a list of service names") }
        let requires = fields["requires"].flatMap {
            stringList($0, "\(field).requires", what: "a list of service names")
        }
        let healthCheck = fields["healthCheck"].flatMap { self.healthCheck($0, "\(field).healthCheck") }
        let readWritePaths = fields["readWritePaths"].flatMap {
            stringList($0, "\(field).readWritePaths", what: "a list of absolute paths")
        }
        guard let name, let exec else { return nil }
        return ModuleManifest.Service(
            name: name, exec: exec, environment: environment, user: user, type: type ?? .simple,
            restart: restart ?? ModuleManifest.Service.defaultRestart, restartSec: restartSec,
            watchdogSec: watchdogSec, after: after ?? [], requires: requires ?? [], healthCheck: healthCheck,
            readWritePaths: readWritePaths ?? [])
    }

    private mutating func healthCheck(_ node: Node, _ field: String) -> ModuleManifest.HealthCheck? {
        guard let fields = mapping(node, field, allowed: ["http", "exec", "interval", "timeout"], required: [])
        else { return nil }
        let http = fields["http"].flatMap { string($0, "\(field).http") }
        let exec = fields["exec"].flatMap { stringList($0, "\(field).exec", what: "a list of strings (argv)") }
        let interval = fields["interval"].flatMap { timeSpan($0, "\(field).interval") }
        let timeout = fields["timeout"].flatMap { timeSpan($0, "\(field).timeout") }
        if (fields["http"] == nil) == (fields["exec"] == nil) {
            fail(field, "needs exactly one of `http` (a URL) or `exec` (argv)", node)
            return nil
        }
        return ModuleManifest.HealthCheck(
            http: http, exec: exec, interval: interval ?? ModuleManifest.HealthCheck.defaultInterval,
            timeout: timeout ?? ModuleManifest.HealthCheck.defaultTimeout)
    }

    // MARK: Typed readers

    private mutating func fail(_ field: String, _ reason: String, _ node: Node?) {
        issues.append(.init(file: file, field: field, reason: reason, line: node?.mark?.line))
    }

    private mutating func note(_ field: String, _ node: Node) {
        if let line = node.mark?.line { lines[field] = line }
    }

    private static func kind(_ node: Node) -> String {
        switch node {
        case .scalar: node.null != nil ? "null" : "a scalar"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    /// A scalar as its literal text (so `version: 1.10` stays `1.10` and `restart: no` stays `no`).
    mutating func string(_ node: Node, _ field: String, allowEmpty: Bool = false) -> String? {
        note(field, node)
        guard case .scalar(let scalar) = node else {
            fail(field, "must be a string, not \(Self.kind(node))", node)
            return nil
        }
        if node.null != nil && scalar.style == .plain && !allowEmpty {
            fail(field, "must not be empty", node)
            return nil
        }
        if node.null != nil && scalar.style == .plain { return "" }
        return scalar.string
    }

    private mutating func stringList(_ node: Node, _ field: String, what: String) -> [String]? {
        guard let items = sequence(node, field, what: what) else { return nil }
        var out: [String] = []
        var ok = true
        for (index, item) in items.enumerated() {
            if let text = string(item, "\(field)[\(index)]") { out.append(text) } else { ok = false }
        }
        return ok ? out : nil
    }

    private mutating func sequence(_ node: Node, _ field: String, what: String) -> [Node]? {
        note(field, node)
        guard case .sequence(let sequence) = node else {
            fail(field, "must be \(what), not \(Self.kind(node))", node)
            return nil
        }
        return Array(sequence)
    }

    /// A mapping's entries in file order, with string keys; duplicate keys are issues.
    private mutating func pairs(_ node: Node, _ field: String, what: String) -> [(String, Node)]? {
        note(field, node)
        guard case .mapping(let mapping) = node else {
            fail(field, "must be \(what), not \(Self.kind(node))", node)
            return nil
        }
        var out: [(String, Node)] = []
        var seen: Set<String> = []
        for (keyNode, value) in mapping {
            let prefix = field.isEmpty ? "" : "\(field)."
            guard case .scalar(let key) = keyNode else {
                fail(field, "keys must be strings, not \(Self.kind(keyNode))", keyNode)
                continue
            }
            guard seen.insert(key.string).inserted else {
                fail("\(prefix)\(key.string)", "appears twice", keyNode)
                continue
            }
            out.append((key.string, value))
        }
        return out
    }

    private mutating func mapping(_ node: Node, _ field: String, allowed: Set<String>, required: [String])
        -> [String: Node]?
    {
        let what = field.isEmpty ? "a mapping (name, version, services, …)" : "a mapping"
        guard let pairs = pairs(node, field, what: what) else { return nil }
        let prefix = field.isEmpty ? "" : "\(field)."
        var out: [String: Node] = [:]
        for (key, value) in pairs {
            guard allowed.contains(key) else {
                fail("\(prefix)\(key)", "unknown key (known: \(allowed.sorted().joined(separator: ", ")))", value)
                continue
            }
            out[key] = value
        }
        for key in required where out[key] == nil {
            fail("\(prefix)\(key)", "is required", node)
        }
        return out
    }

    private mutating func enumeration<E: RawRepresentable & CaseIterable>(_ node: Node, _ field: String, _: E.Type)
        -> E? where E.RawValue == String
    {
        guard let text = string(node, field) else { return nil }
        guard let value = E(rawValue: text) else {
            let known = E.allCases.map(\.rawValue).joined(separator: ", ")
            fail(field, "unknown value \"\(text.escapedForMessage)\" (known: \(known))", node)
            return nil
        }
        return value
    }

    private mutating func timeSpan(_ node: Node, _ field: String) -> TimeSpan? {
        guard let text = string(node, field) else { return nil }
        guard let span = TimeSpan(parsing: text) else {
            fail(
                field,
                "\"\(text.escapedForMessage)\" is not a duration (integer seconds or <n>ms|s|min|h, at most 7 days)",
                node)
            return nil
        }
        return span
    }
}

extension String {
    /// The string with control characters shown as `\n`, `\u{0}` …, safe to put in an error message.
    public var escapedForMessage: String {
        var out = ""
        for scalar in unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += scalar.escaped(asASCII: true)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
