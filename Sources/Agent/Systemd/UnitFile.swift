import Shared

/// A systemd unit file Muster generates: `[Unit]`, `[Service]` or `[Mount]`, and `[Install]`.
///
/// Every value is validated when the file is rendered (``render()``): no control characters (newline, CR, NUL,
/// …), no leading `[`/`=` or surrounding whitespace in free-text values, no trailing `\` (a line continuation),
/// specifier `%` written as `%%`, and `ExecStart=` arguments quoted per systemd.syntax(7) and systemd.service(5)
/// ("Command lines") so the process receives exactly the argv given. Fixed vocabularies (`Type=`, `Restart=`)
/// are enums. The `X-Muster-Owner=` key (ignored by systemd) marks the unit as ours; ``UnitWriter`` refuses to
/// touch files without it.
struct UnitFile: Sendable, Equatable {
    /// The owner marker key in `[Unit]`.
    static let ownerKey = "X-Muster-Owner"

    /// Who generated the unit, e.g. `web/api` (module/service); from `[a-z0-9_./-]`.
    var owner: String
    var unit: UnitSection
    var service: ServiceSection?
    var mount: MountSection?
    var install: InstallSection?
    /// The manager the unit is for; sandbox profiles differ for user managers (``SandboxProfile``).
    var scope: SystemdManager.Scope

    init(
        owner: String, unit: UnitSection = UnitSection(), service: ServiceSection? = nil,
        mount: MountSection? = nil, install: InstallSection? = nil, scope: SystemdManager.Scope = .system
    ) {
        self.scope = scope
        self.owner = owner
        self.unit = unit
        self.service = service
        self.mount = mount
        self.install = install
    }

    // MARK: - Sections

    struct UnitSection: Sendable, Equatable {
        var description: String?
        var after: [UnitName] = []
        var requires: [UnitName] = []
        var wants: [UnitName] = []
        /// `StartLimitIntervalSec=`; `.zero` disables the start rate limit.
        var startLimitInterval: Duration?
        var startLimitBurst: Int?

        init(
            description: String? = nil, after: [UnitName] = [], requires: [UnitName] = [], wants: [UnitName] = [],
            startLimitInterval: Duration? = nil, startLimitBurst: Int? = nil
        ) {
            self.description = description
            self.after = after
            self.requires = requires
            self.wants = wants
            self.startLimitInterval = startLimitInterval
            self.startLimitBurst = startLimitBurst
        }
    }

    enum ServiceType: String, Sendable, CaseIterable { case simple, exec, notify, oneshot }

    enum RestartPolicy: String, Sendable, CaseIterable {
        case no
        case onSuccess = "on-success"
        case onFailure = "on-failure"
        case onAbnormal = "on-abnormal"
        case onWatchdog = "on-watchdog"
        case onAbort = "on-abort"
        case always
    }

    /// Who may send `sd_notify` messages (`NotifyAccess=`); `all` lets a child (e.g. `systemd-notify`) do it.
    enum NotifyAccess: String, Sendable, CaseIterable { case none, main, exec, all }

    /// Where the service's stdout/stderr go.
    enum Output: Sendable, Equatable {
        case inherit
        case journal
        case null
        /// `append:PATH` — used by tests (no journald in a test node) and for file logs.
        case append(String)
    }

    struct EnvironmentVariable: Sendable, Equatable {
        var name: String
        var value: String
        init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    struct ServiceSection: Sendable, Equatable {
        var type: ServiceType = .simple
        /// The argv; element 0 is an absolute executable path.
        var execStart: [String]
        var restart: RestartPolicy = .no
        var restartSec: Duration?
        var watchdogSec: Duration?
        var notifyAccess: NotifyAccess?
        var timeoutStartSec: Duration?
        var remainAfterExit: Bool?
        var environment: [EnvironmentVariable] = []
        var user: String?
        var group: String?
        var workingDirectory: String?
        var readWritePaths: [String] = []
        var sandbox: SandboxProfile = .default
        var standardOutput: Output?
        var standardError: Output?

        init(
            type: ServiceType = .simple, execStart: [String], restart: RestartPolicy = .no,
            restartSec: Duration? = nil, watchdogSec: Duration? = nil, notifyAccess: NotifyAccess? = nil,
            timeoutStartSec: Duration? = nil,
            remainAfterExit: Bool? = nil, environment: [EnvironmentVariable] = [], user: String? = nil,
            group: String? = nil, workingDirectory: String? = nil, readWritePaths: [String] = [],
            sandbox: SandboxProfile = .default, standardOutput: Output? = nil, standardError: Output? = nil
        ) {
            self.type = type
            self.execStart = execStart
            self.restart = restart
            self.restartSec = restartSec
            self.watchdogSec = watchdogSec
            self.notifyAccess = notifyAccess
            self.timeoutStartSec = timeoutStartSec
            self.remainAfterExit = remainAfterExit
            self.environment = environment
            self.user = user
            self.group = group
            self.workingDirectory = workingDirectory
            self.readWritePaths = readWritePaths
            self.sandbox = sandbox
            self.standardOutput = standardOutput
            self.standardError = standardError
        }
    }

    struct MountSection: Sendable, Equatable {
        var what: String
        var `where`: String
        var type: String?
        var options: [String] = []
        /// `LazyUnmount=yes`: stopping the unit detaches the mount even while processes still use it (a reattach
        /// unmounts the old module version under services that kept running from it).
        var lazyUnmount: Bool?

        init(what: String, where path: String, type: String? = nil, options: [String] = [], lazyUnmount: Bool? = nil) {
            self.what = what
            self.where = path
            self.type = type
            self.options = options
            self.lazyUnmount = lazyUnmount
        }
    }

    struct InstallSection: Sendable, Equatable {
        var wantedBy: [UnitName] = []
    }

    // MARK: - Errors

    /// A value that cannot be written safely; `field` names it like `Service.ExecStart[2]` or `Environment.PORT`.
    struct ValidationError: Error, Sendable, Equatable, CustomStringConvertible {
        var field: String
        var reason: String
        var description: String { "\(field): \(reason)" }

        /// The operator-facing error, naming the unit.
        func musterError(unit: String) -> MusterError {
            MusterError(.invalidInput, "unit \(unit): field \(field): \(reason)")
        }
    }

    // MARK: - Rendering

    /// The file's text, every value validated and escaped.
    /// - Throws: ``ValidationError`` naming the first field that cannot be written safely.
    func render() throws(ValidationError) -> String {
        var w = Writer()
        try Self.checkOwner(owner)
        w.lines.append("# Generated by Muster for \(owner); do not edit: Muster rewrites or removes this file.")
        w.section("Unit")
        if let d = unit.description { try w.plain("Description", d, field: "Unit.Description") }
        w.raw(Self.ownerKey, owner)
        if !unit.after.isEmpty { w.raw("After", unit.after.map(\.rawValue).joined(separator: " ")) }
        if !unit.requires.isEmpty { w.raw("Requires", unit.requires.map(\.rawValue).joined(separator: " ")) }
        if !unit.wants.isEmpty { w.raw("Wants", unit.wants.map(\.rawValue).joined(separator: " ")) }
        if let i = unit.startLimitInterval {
            w.raw("StartLimitIntervalSec", try Self.duration(i, field: "Unit.StartLimitIntervalSec", allowZero: true))
        }
        if let b = unit.startLimitBurst {
            guard b >= 0 else { throw ValidationError(field: "Unit.StartLimitBurst", reason: "must not be negative") }
            w.raw("StartLimitBurst", String(b))
        }
        if service != nil && mount != nil {
            throw ValidationError(field: "UnitFile", reason: "a unit has either [Service] or [Mount], not both")
        }
        if let service { try renderService(service, into: &w) }
        if let mount { try renderMount(mount, into: &w) }
        if let install, !install.wantedBy.isEmpty {
            w.section("Install")
            w.raw("WantedBy", install.wantedBy.map(\.rawValue).joined(separator: " "))
        }
        return w.lines.joined(separator: "\n") + "\n"
    }

    private func renderService(_ s: ServiceSection, into w: inout Writer) throws(ValidationError) {
        w.section("Service")
        w.raw("Type", s.type.rawValue)
        if s.type == .oneshot && (s.restart == .always || s.restart == .onSuccess) {
            throw ValidationError(
                field: "Service.Restart", reason: "'\(s.restart.rawValue)' is not allowed for Type=oneshot")
        }
        w.raw("ExecStart", try Self.commandLine(s.execStart, field: "Service.ExecStart"))
        w.raw("Restart", s.restart.rawValue)
        if let r = s.restartSec {
            w.raw("RestartSec", try Self.duration(r, field: "Service.RestartSec", allowZero: true))
        }
        if let d = s.watchdogSec {
            w.raw("WatchdogSec", try Self.duration(d, field: "Service.WatchdogSec", allowZero: false))
        }
        if let n = s.notifyAccess { w.raw("NotifyAccess", n.rawValue) }
        if let d = s.timeoutStartSec {
            w.raw("TimeoutStartSec", try Self.duration(d, field: "Service.TimeoutStartSec", allowZero: false))
        }
        if let r = s.remainAfterExit { w.raw("RemainAfterExit", r ? "yes" : "no") }
        for variable in s.environment {
            let field = "Service.Environment.\(variable.name)"
            guard Self.isEnvironmentName(variable.name) else {
                throw ValidationError(field: field, reason: "name must match [A-Za-z_][A-Za-z0-9_]*")
            }
            w.raw("Environment", try Self.quote("\(variable.name)=\(variable.value)", field: field, dollar: false))
        }
        if let u = s.user { w.raw("User", try Self.accountName(u, field: "Service.User")) }
        if let g = s.group { w.raw("Group", try Self.accountName(g, field: "Service.Group")) }
        if let d = s.workingDirectory { w.raw("WorkingDirectory", try Self.path(d, field: "Service.WorkingDirectory")) }
        if !s.readWritePaths.isEmpty {
            var paths: [String] = []
            for (i, p) in s.readWritePaths.enumerated() {
                paths.append(try Self.path(p, field: "Service.ReadWritePaths[\(i)]"))
            }
            w.raw("ReadWritePaths", paths.joined(separator: " "))
        }
        if let o = s.standardOutput { w.raw("StandardOutput", try Self.output(o, field: "Service.StandardOutput")) }
        if let o = s.standardError { w.raw("StandardError", try Self.output(o, field: "Service.StandardError")) }
        let sandbox = s.sandbox.directives(for: scope)
        if !sandbox.isEmpty {
            w.lines.append("# Sandbox profile: \(s.sandbox.rawValue) (\(scope.rawValue) manager)")
            for (key, value) in sandbox { w.raw(key, value) }
        }
    }

    private func renderMount(_ m: MountSection, into w: inout Writer) throws(ValidationError) {
        w.section("Mount")
        w.raw("What", try Self.safeToken(m.what, field: "Mount.What", extra: ":/,=+@"))
        w.raw("Where", try Self.path(m.where, field: "Mount.Where"))
        if let t = m.type {
            guard !t.isEmpty,
                t.utf8.allSatisfy({ Self.isAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") })
            else { throw ValidationError(field: "Mount.Type", reason: "must be a file system name from [A-Za-z0-9._]") }
            w.raw("Type", t)
        }
        if !m.options.isEmpty {
            var opts: [String] = []
            for (i, o) in m.options.enumerated() {
                opts.append(try Self.safeToken(o, field: "Mount.Options[\(i)]", extra: ":/=+@"))
            }
            w.raw("Options", opts.joined(separator: ","))
        }
        if let lazy = m.lazyUnmount { w.raw("LazyUnmount", lazy ? "yes" : "no") }
    }

    // MARK: - Value rules

    private struct Writer {
        var lines: [String] = []
        mutating func section(_ name: String) {
            if !lines.isEmpty { lines.append("") }
            lines.append("[\(name)]")
        }
        /// A value already validated (or from a fixed vocabulary).
        mutating func raw(_ key: String, _ value: String) { lines.append("\(key)=\(value)") }
        /// Free text: validated and `%`-escaped.
        mutating func plain(_ key: String, _ value: String, field: String) throws(ValidationError) {
            raw(key, try UnitFile.freeText(value, field: field))
        }
    }

    static func checkOwner(_ owner: String) throws(ValidationError) {
        guard !owner.isEmpty, owner.utf8.count <= 200,
            owner.utf8.allSatisfy({
                isLowerAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".")
                    || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "@")
            })
        else {
            throw ValidationError(field: "Unit.\(ownerKey)", reason: "must be 1–200 characters from [a-z0-9_./@-]")
        }
    }

    /// Rejects control characters (C0, DEL, and the Unicode line/paragraph separators).
    private static func checkNoControl(_ value: String, field: String) throws(ValidationError) {
        for scalar in value.unicodeScalars {
            let v = scalar.value
            if v == 0 { throw ValidationError(field: field, reason: "contains a NUL byte") }
            if v == 0x0A || v == 0x0D {
                throw ValidationError(field: field, reason: "contains a line break (unit-file injection)")
            }
            if v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v) || v == 0x2028 || v == 0x2029 {
                throw ValidationError(field: field, reason: "contains a control character (U+\(hex4(v)))")
            }
        }
    }

    private static func hex4(_ v: UInt32) -> String {
        let s = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - s.count)) + s
    }

    /// Free text (`Description=`): no control characters, no surrounding whitespace (systemd strips it), no
    /// leading `[` or `=`, no trailing `\` (line continuation); `%` → `%%`.
    static func freeText(_ value: String, field: String) throws(ValidationError) -> String {
        try checkNoControl(value, field: field)
        guard let first = value.first, let last = value.last else {
            throw ValidationError(field: field, reason: "must not be empty")
        }
        if first.isWhitespace || last.isWhitespace {
            throw ValidationError(field: field, reason: "must not start or end with whitespace")
        }
        if first == "[" || first == "=" {
            throw ValidationError(field: field, reason: "must not start with '\(first)'")
        }
        if last == "\\" {
            throw ValidationError(field: field, reason: "must not end with '\\' (a line continuation)")
        }
        return value.replacingPercent()
    }

    /// One double-quoted word: `\` → `\\`, `"` → `\"`, `%` → `%%`, and (in command lines) `$` → `$$`.
    static func quote(_ value: String, field: String, dollar: Bool) throws(ValidationError) -> String {
        try checkNoControl(value, field: field)
        var out = "\""
        for ch in value {
            switch ch {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "%": out += "%%"
            case "$" where dollar: out += "$$"
            default: out.append(ch)
            }
        }
        return out + "\""
    }

    /// `ExecStart=`: an absolute executable path, then every argument quoted so it reaches the process verbatim.
    static func commandLine(_ argv: [String], field: String) throws(ValidationError) -> String {
        guard let executable = argv.first else { throw ValidationError(field: field, reason: "must not be empty") }
        guard executable.hasPrefix("/") else {
            throw ValidationError(field: "\(field)[0]", reason: "the executable must be an absolute path")
        }
        var words: [String] = []
        for (i, arg) in argv.enumerated() {
            // A lone ";" separates commands even when quoted; "\;" is the literal (systemd.service(5)).
            if arg == ";" {
                words.append("\\;")
                continue
            }
            words.append(try quote(arg, field: "\(field)[\(i)]", dollar: true))
        }
        return words.joined(separator: " ")
    }

    /// An absolute, normalized path from `[A-Za-z0-9/._+@:-]` (no spaces, quotes, `%` or `..`).
    static func path(_ value: String, field: String) throws(ValidationError) -> String {
        try checkNoControl(value, field: field)
        guard value.hasPrefix("/") else { throw ValidationError(field: field, reason: "must be an absolute path") }
        if value.split(separator: "/").contains("..") {
            throw ValidationError(field: field, reason: "must not contain '..'")
        }
        return try safeToken(value, field: field, extra: "/+@:")
    }

    /// A token from `[A-Za-z0-9._-]` plus `extra`.
    static func safeToken(_ value: String, field: String, extra: String) throws(ValidationError) -> String {
        try checkNoControl(value, field: field)
        let allowed = Set(("._-" + extra).utf8)
        guard !value.isEmpty else { throw ValidationError(field: field, reason: "must not be empty") }
        for b in value.utf8 where !(isAlnum(b) || allowed.contains(b)) {
            throw ValidationError(
                field: field,
                reason: "character '\(Character(Unicode.Scalar(b)))' is not allowed here "
                    + "(allowed: letters, digits and ._-\(extra))")
        }
        if value.first == "-" || value.first == "+" {
            throw ValidationError(field: field, reason: "must not start with '\(value.first ?? "-")'")
        }
        return value
    }

    static func accountName(_ value: String, field: String) throws(ValidationError) -> String {
        try checkNoControl(value, field: field)
        let bytes = Array(value.utf8)
        let numeric = !bytes.isEmpty && bytes.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        let name =
            !bytes.isEmpty && bytes.count <= 32
            && (bytes[0] == UInt8(ascii: "_") || (bytes[0] >= UInt8(ascii: "a") && bytes[0] <= UInt8(ascii: "z")))
            && bytes.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
        guard numeric || name else {
            throw ValidationError(field: field, reason: "must be a user/group name [a-z_][a-z0-9_-]{0,31} or a number")
        }
        return value
    }

    static func output(_ o: Output, field: String) throws(ValidationError) -> String {
        switch o {
        case .inherit: "inherit"
        case .journal: "journal"
        case .null: "null"
        case .append(let p): "append:" + (try path(p, field: field))
        }
    }

    /// Milliseconds (`1500ms`); sub-millisecond remainders are refused rather than rounded silently.
    static func duration(_ d: Duration, field: String, allowZero: Bool) throws(ValidationError) -> String {
        let (seconds, attoseconds) = d.components
        guard seconds >= 0, attoseconds >= 0 else {
            throw ValidationError(field: field, reason: "must not be negative")
        }
        guard attoseconds % 1_000_000_000_000_000 == 0 else {
            throw ValidationError(field: field, reason: "must be a whole number of milliseconds")
        }
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        if ms == 0 {
            guard allowZero else { throw ValidationError(field: field, reason: "must be greater than zero") }
            return "0"
        }
        return "\(ms)ms"
    }

    static func isEnvironmentName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, !(first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9")) else { return false }
        return bytes.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") }
    }

    private static func isAlnum(_ b: UInt8) -> Bool {
        isLowerAlnum(b) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
    }

    private static func isLowerAlnum(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
    }

    // MARK: - Reading the marker back

    /// The `X-Muster-Owner=` value in the `[Unit]` section of a unit file's text, or `nil` if it is not ours.
    static func owner(inContents text: String) -> String? {
        var section = ""
        for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let trimmed = line.trimmingWhitespace()
            if trimmed.hasPrefix("[") && trimmed.hasSuffix("]") {
                section = String(trimmed.dropFirst().dropLast())
                continue
            }
            guard section == "Unit", trimmed.hasPrefix(ownerKey + "=") else { continue }
            let value = String(trimmed.dropFirst(ownerKey.count + 1))
            return value.isEmpty ? nil : value
        }
        return nil
    }
}

// MARK: - Sandbox profiles

/// Sandboxing applied to a service, after portablectl's profiles (`/usr/lib/systemd/portable/profile/*`).
///
/// - `trusted`: nothing added — the service runs with the manager's defaults (like portablectl's `trusted`).
/// - `default`: `NoNewPrivileges`, private `/tmp` and `/dev`, read-only OS (`ProtectSystem=strict`; the manifest's
///   read-write paths become `ReadWritePaths=`), no `/home`, kernel tunables/modules/logs/cgroups/clock/hostname
///   protected, no SUID/SGID creation, no realtime, no namespaces, personality locked, native syscalls only, and
///   only `AF_UNIX AF_NETLINK AF_INET AF_INET6` sockets.
/// - `strict`: `default` plus no network (`PrivateNetwork=yes`, `AF_UNIX` only), an empty capability bounding
///   set, `MemoryDenyWriteExecute=yes` and `SystemCallFilter=@system-service` (EPERM otherwise).
///
/// For a **user** manager (`--systemd user`) the namespace options imply `PrivateUsers=yes`, and inside that user
/// namespace `ProtectKernelTunables=`, `ProtectKernelLogs=`, `ProtectControlGroups=` (read-only remounts of
/// `/proc/sys`, `/sys`, `/sys/fs/cgroup`) and `ProtectHome=yes` fail with `226/NAMESPACE` on our nodes (checked on
/// systemd 252, kernel 6.18); so user-manager profiles leave those three out and use `ProtectHome=tmpfs`, which
/// hides `/home` just the same.
enum SandboxProfile: String, Sendable, CaseIterable {
    case `default`
    case strict
    case trusted

    /// The directives for a unit of a `scope` manager, in the order written.
    func directives(for scope: SystemdManager.Scope = .system) -> [(String, String)] {
        let user = scope == .user
        var base: [(String, String)] = [
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", user ? "tmpfs" : "yes"),
        ]
        if !user {
            base += [
                ("ProtectKernelTunables", "yes"),
                ("ProtectKernelLogs", "yes"),
                ("ProtectControlGroups", "yes"),
            ]
        }
        base += [
            ("ProtectKernelModules", "yes"),
            ("ProtectClock", "yes"),
            ("ProtectHostname", "yes"),
            ("RestrictSUIDSGID", "yes"),
            ("RestrictRealtime", "yes"),
            ("RestrictNamespaces", "yes"),
            ("LockPersonality", "yes"),
            ("SystemCallArchitectures", "native"),
        ]
        switch self {
        case .trusted:
            return []
        case .default:
            return base + [("RestrictAddressFamilies", "AF_UNIX AF_NETLINK AF_INET AF_INET6")]
        case .strict:
            return base + [
                ("PrivateNetwork", "yes"),
                ("RestrictAddressFamilies", "AF_UNIX"),
                ("CapabilityBoundingSet", ""),
                ("MemoryDenyWriteExecute", "yes"),
                ("SystemCallFilter", "@system-service"),
                ("SystemCallErrorNumber", "EPERM"),
            ]
        }
    }
}

extension String {
    fileprivate func replacingPercent() -> String {
        var out = ""
        for ch in self {
            if ch == "%" { out += "%%" } else { out.append(ch) }
        }
        return out
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
