import Foundation

/// What a path inside a module tree turns out to be once in-module symlinks are followed.
public enum ModuleTreeResolution: Sendable, Equatable {
    case regularFile(executable: Bool)
    case directory
    case missing
    /// Following the path leaves the module root (a `..` above it or an absolute symlink).
    case escapes
    /// Too many symlinks (a loop).
    case loop
}

/// The view of a module's file tree that validation needs; the builder's scanned tree implements it.
public protocol ModuleTreeLookup {
    /// Resolves an absolute in-module path (`/bin/server`), following symlinks inside the tree.
    func resolve(_ path: String) -> ModuleTreeResolution
}

extension ModuleManifest {
    /// `[a-z0-9][a-z0-9-]{0,62}`: module, service and volume names (they end up in unit and directory names).
    public static func isSafeName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...63).contains(bytes.count), isLowerAlnum(bytes[0]) else { return false }
        return bytes.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") }
    }

    /// `[A-Za-z0-9][A-Za-z0-9._+-]{0,63}`: versions (`NAME@VERSION`, directory names).
    public static func isSafeVersion(_ version: String) -> Bool {
        let bytes = Array(version.utf8)
        guard (1...64).contains(bytes.count), isAlnum(bytes[0]) else { return false }
        return bytes.allSatisfy {
            isAlnum($0) || [UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "+"), UInt8(ascii: "-")].contains($0)
        }
    }

    /// Why `path` is not a normalized absolute path from `[A-Za-z0-9._@+-/]` without `.`/`..` components, or
    /// `nil` when it is one. Such paths need no quoting in unit files (`ReadWritePaths=` splits on spaces).
    public static func pathProblem(_ path: String) -> String? {
        guard path.hasPrefix("/") else { return "must be an absolute path (start with /)" }
        guard path.utf8.count <= 1024 else { return "is longer than 1024 bytes" }
        if let bad = path.unicodeScalars.first(where: { !isPathScalar($0) }) {
            return "contains \"\(String(bad).escapedForMessage)\"; paths may use only A-Z a-z 0-9 . _ @ + - /"
        }
        if path == "/" { return nil }
        if path.hasSuffix("/") { return "must not end with /" }
        for component in path.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty { return "must not contain //" }
            if component == "." || component == ".." { return "must not contain . or .. components" }
        }
        return nil
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`: environment variable names (a `=` would change which variable is set).
    public static func isSafeEnvironmentName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, first == UInt8(ascii: "_") || isAlpha(first), bytes.count <= 255 else {
            return false
        }
        return bytes.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") }
    }

    /// User names as useradd accepts them (`[a-z_][a-z0-9_-]{0,31}`), or a numeric uid.
    public static func isSafeUser(_ user: String) -> Bool {
        let bytes = Array(user.utf8)
        guard (1...32).contains(bytes.count) else { return false }
        if bytes.allSatisfy(isDigit) { return UInt32(user).map { $0 < 4_294_967_295 } ?? false }
        guard bytes[0] == UInt8(ascii: "_") || (bytes[0] >= UInt8(ascii: "a") && bytes[0] <= UInt8(ascii: "z"))
        else { return false }
        return bytes.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    /// Why a value written into a unit file is unsafe, or `nil`: control characters (a newline would start a
    /// new setting or `[Section]`) and, unless `leadingAllowed`, a leading `=` or `[`.
    public static func unitValueProblem(_ value: String, leadingAllowed: Bool = false) -> String? {
        if let bad = value.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            let what = bad == "\n" || bad == "\r" ? "a line break" : bad == "\0" ? "a NUL byte" : "a control character"
            return "contains \(what) (\(String(bad).escapedForMessage)), which could inject unit-file lines"
        }
        if !leadingAllowed, let first = value.first, first == "=" || first == "[" {
            return "must not start with \"\(first)\" (unit-file syntax)"
        }
        if value.utf8.count > 4096 { return "is longer than 4096 bytes" }
        return nil
    }

    // MARK: - Validate

    /// Checks what the manifest means: names, paths, unit-file safety of every value, service references and
    /// dependency cycles, and — with a `tree` — that every `exec[0]` is an executable file in the module.
    ///
    /// - Parameters:
    ///   - file: The manifest's path, for the issues.
    ///   - lines: Field → line, from ``parse(yaml:file:)``.
    ///   - tree: The module's files; `nil` skips the existence checks (e.g. for a manifest inside a descriptor).
    /// - Returns: Every problem, in file order; empty when the manifest is valid.
    public func validate(file: String, lines: [String: Int] = [:], tree: (any ModuleTreeLookup)? = nil) -> [Issue] {
        var issues: [Issue] = []
        func fail(_ field: String, _ reason: String) {
            // Fall back to the parent field's line (`services[0].after` for `services[0].after[1]`).
            var key = field
            var line = lines[key]
            while line == nil, let cut = key.lastIndex(where: { $0 == "." || $0 == "[" }) {
                key = String(key[..<cut])
                line = lines[key]
            }
            issues.append(Issue(file: file, field: field, reason: reason, line: line))
        }

        // Every string that ends up in a unit file or a path: no control characters, no leading `=`/`[`.
        for (field, value, leadingAllowed) in unitStrings() {
            if let problem = Self.unitValueProblem(value, leadingAllowed: leadingAllowed) { fail(field, problem) }
        }

        if !Self.isSafeName(name) {
            fail("name", "\"\(name.escapedForMessage)\" is not a valid module name ([a-z0-9][a-z0-9-]{0,62})")
        }
        if !Self.isSafeVersion(version) {
            fail(
                "version", "\"\(version.escapedForMessage)\" is not a valid version ([A-Za-z0-9][A-Za-z0-9._+-]{0,63})")
        }

        var firstIndex: [String: Int] = [:]
        for (index, service) in services.enumerated() {
            let field = "services[\(index)]"
            if !Self.isSafeName(service.name) {
                fail(
                    "\(field).name",
                    "\"\(service.name.escapedForMessage)\" is not a valid service name ([a-z0-9][a-z0-9-]{0,62})")
            } else if let earlier = firstIndex[service.name] {
                fail("\(field).name", "duplicate service name \"\(service.name)\" (also services[\(earlier)])")
            } else {
                firstIndex[service.name] = index
            }
            validateExec(service.exec, field: "\(field).exec", tree: tree, fail: fail)
            for key in service.environment.keys.sorted() where !Self.isSafeEnvironmentName(key) {
                fail("\(field).env.\(key.escapedForMessage)", "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)")
            }
            if let user = service.user, !Self.isSafeUser(user) {
                fail(
                    "\(field).user", "\"\(user.escapedForMessage)\" is not a user name ([a-z_][a-z0-9_-]{0,31}) or uid")
            }
            if service.type == .oneshot, service.restart == .always || service.restart == .onSuccess {
                fail(
                    "\(field).restart",
                    "\(service.restart.rawValue) is not allowed for type oneshot (systemd refuses it)")
            }
            if let watchdog = service.watchdogSec, watchdog.milliseconds == 0 {
                fail("\(field).watchdogSec", "must be greater than 0 (leave it out to disable the watchdog)")
            }
            if let check = service.healthCheck {
                // The YAML reader enforces this too; a manifest decoded from JSON has not been through it.
                if (check.http == nil) == (check.exec == nil) {
                    fail("\(field).healthCheck", "needs exactly one of `http` (a URL) or `exec` (argv)")
                }
                if let url = check.http {
                    if let problem = Self.httpURLProblem(url) { fail("\(field).healthCheck.http", problem) }
                }
                if let exec = check.exec {
                    validateExec(exec, field: "\(field).healthCheck.exec", tree: tree, fail: fail)
                }
                if check.timeout.milliseconds == 0 { fail("\(field).healthCheck.timeout", "must be greater than 0") }
                if check.interval.milliseconds == 0 { fail("\(field).healthCheck.interval", "must be greater than 0") }
            }
            for (pathIndex, path) in service.readWritePaths.enumerated() {
                let pathField = "\(field).readWritePaths[\(pathIndex)]"
                if let problem = Self.pathProblem(path) {
                    fail(pathField, problem)
                } else if path == "/" {
                    fail(pathField, "must not be / (that would make the whole host writable)")
                }
            }
        }

        // References, then cycles over after ∪ requires (either kind of edge orders or binds the units).
        let known = Set(firstIndex.keys)
        for (index, service) in services.enumerated() {
            for (kind, names) in [("after", service.after), ("requires", service.requires)] {
                for (refIndex, reference) in names.enumerated() where !known.contains(reference) {
                    let list = known.sorted().joined(separator: ", ")
                    fail(
                        "services[\(index)].\(kind)[\(refIndex)]",
                        "unknown service \"\(reference.escapedForMessage)\" (services of this module: \(list))")
                }
            }
        }
        if let cycle = dependencyCycle(indexOf: firstIndex) {
            fail(cycle.field, "dependency cycle: \(cycle.names.joined(separator: " → "))")
        }

        var volumeNames: Set<String> = []
        var volumePaths: [String: String] = [:]
        for volume in volumes {
            let field = "volumes.\(volume.name.escapedForMessage)"
            if !Self.isSafeName(volume.name) {
                fail(field, "\"\(volume.name.escapedForMessage)\" is not a valid volume name ([a-z0-9][a-z0-9-]{0,62})")
            }
            if !volumeNames.insert(volume.name).inserted { fail(field, "duplicate volume name") }
            if let problem = Self.pathProblem(volume.path) {
                fail(field, problem)
            } else if volume.path == "/" {
                fail(field, "must not be /")
            } else if let other = volumePaths[volume.path] {
                fail(field, "mount path \(volume.path) is also used by volume \"\(other)\"")
            } else {
                volumePaths[volume.path] = volume.name
            }
        }
        // File order (stable: issues on one line keep the order the checks found them in).
        return issues.enumerated()
            .sorted { ($0.element.line ?? .max, $0.offset) < ($1.element.line ?? .max, $1.offset) }
            .map(\.element)
    }

    /// Throws ``ValidationError`` when ``validate(file:lines:tree:)`` finds anything.
    public func validated(file: String, lines: [String: Int] = [:], tree: (any ModuleTreeLookup)? = nil) throws
        -> ModuleManifest
    {
        let issues = validate(file: file, lines: lines, tree: tree)
        guard issues.isEmpty else { throw ValidationError(issues: issues) }
        return self
    }

    // MARK: - Helpers

    private func validateExec(
        _ exec: [String], field: String, tree: (any ModuleTreeLookup)?, fail: (String, String) -> Void
    ) {
        guard let program = exec.first else {
            fail(field, "must name a program: [/path/in/module, args…]")
            return
        }
        if let problem = Self.pathProblem(program) {
            fail("\(field)[0]", "\(problem); exec[0] is an absolute path inside the module, e.g. /bin/server")
            return
        }
        guard let tree else { return }
        switch tree.resolve(program) {
        case .regularFile(executable: true): break
        case .regularFile(executable: false): fail("\(field)[0]", "\(program) is not executable (chmod +x it)")
        case .directory: fail("\(field)[0]", "\(program) is a directory, not a program")
        case .missing: fail("\(field)[0]", "\(program) does not exist in the module's rootfs/")
        case .escapes: fail("\(field)[0]", "\(program) leads outside the module (through a symlink)")
        case .loop: fail("\(field)[0]", "\(program) is a symlink loop")
        }
    }

    static func httpURLProblem(_ url: String) -> String? {
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else { return "must be an http:// or https:// URL" }
        if url.unicodeScalars.contains(where: { $0 == " " || $0 == "\t" || $0 == "\"" || $0 == "\\" }) {
            return "must not contain spaces, quotes or backslashes"
        }
        guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
            return "is not a valid URL with a host"
        }
        return nil
    }

    /// Every string that is written into a unit file, with its field and whether a leading `=`/`[` is harmless.
    /// Environment values follow `KEY=` inside a quoted `Environment=` assignment, so they may start with anything.
    private func unitStrings() -> [(String, String, Bool)] {
        var out: [(String, String, Bool)] = [("name", name, false), ("version", version, false)]
        for (index, service) in services.enumerated() {
            let field = "services[\(index)]"
            out.append(("\(field).name", service.name, false))
            for (argIndex, arg) in service.exec.enumerated() { out.append(("\(field).exec[\(argIndex)]", arg, false)) }
            for key in service.environment.keys.sorted() {
                out.append(("\(field).env.\(key.escapedForMessage)", key, false))
                out.append(("\(field).env.\(key.escapedForMessage)", service.environment[key] ?? "", true))
            }
            if let user = service.user { out.append(("\(field).user", user, false)) }
            for (refIndex, name) in service.after.enumerated() {
                out.append(("\(field).after[\(refIndex)]", name, false))
            }
            for (refIndex, name) in service.requires.enumerated() {
                out.append(("\(field).requires[\(refIndex)]", name, false))
            }
            if let check = service.healthCheck {
                if let url = check.http { out.append(("\(field).healthCheck.http", url, false)) }
                for (argIndex, arg) in (check.exec ?? []).enumerated() {
                    out.append(("\(field).healthCheck.exec[\(argIndex)]", arg, false))
                }
            }
            for (pathIndex, path) in service.readWritePaths.enumerated() {
                out.append(("\(field).readWritePaths[\(pathIndex)]", path, false))
            }
        }
        for volume in volumes {
            out.append(("volumes.\(volume.name.escapedForMessage)", volume.name, false))
            out.append(("volumes.\(volume.name.escapedForMessage)", volume.path, false))
        }
        return out
    }

    /// The first dependency cycle over `after` ∪ `requires` edges, in service order, as the names along it
    /// (`a → b → a`) and the field of its first edge.
    private func dependencyCycle(indexOf: [String: Int]) -> (names: [String], field: String)? {
        enum Mark { case visiting, done }
        var marks: [Int: Mark] = [:]
        // Edges in manifest order, each with the field that declared it.
        func edges(_ index: Int) -> [(Int, String)] {
            let service = services[index]
            var out: [(Int, String)] = []
            for (kind, names) in [("after", service.after), ("requires", service.requires)] {
                for (refIndex, name) in names.enumerated() {
                    if let target = indexOf[name] { out.append((target, "services[\(index)].\(kind)[\(refIndex)]")) }
                }
            }
            return out
        }
        var stack: [(index: Int, field: String)] = []
        func visit(_ index: Int) -> (names: [String], field: String)? {
            marks[index] = .visiting
            for (target, field) in edges(index) {
                stack.append((index, field))
                if marks[target] == .visiting {
                    let start = stack.firstIndex { $0.index == target } ?? 0
                    let path = stack[start...]
                    return (path.map { services[$0.index].name } + [services[target].name], path.first?.field ?? field)
                }
                if marks[target] == nil, let cycle = visit(target) { return cycle }
                stack.removeLast()
            }
            marks[index] = .done
            return nil
        }
        for index in services.indices where indexOf[services[index].name] == index && marks[index] == nil {
            if let cycle = visit(index) { return cycle }
        }
        return nil
    }

    private static func isLowerAlnum(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || isDigit(byte)
    }
    private static func isAlpha(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
            || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
    }
    private static func isAlnum(_ byte: UInt8) -> Bool { isAlpha(byte) || isDigit(byte) }
    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    private static func isPathScalar(_ scalar: Unicode.Scalar) -> Bool {
        guard scalar.isASCII else { return false }
        let byte = UInt8(scalar.value)
        return isAlnum(byte) || "._@+-/".utf8.contains(byte)
    }
}
