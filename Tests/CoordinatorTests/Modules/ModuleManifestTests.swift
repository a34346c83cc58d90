import Foundation
import Shared
import Testing

@Suite("Module manifest: parsing and validation")
struct ModuleManifestTests {
    /// Parses and validates without a file tree; returns the issues (empty = valid).
    static func issues(_ yaml: String) -> [ModuleManifest.Issue] {
        do {
            let parsed = try ModuleManifest.parse(yaml: yaml, file: "module.yaml")
            return parsed.manifest.validate(file: "module.yaml", lines: parsed.lines)
        } catch let error as ModuleManifest.ValidationError {
            return error.issues
        } catch {
            Issue.record("unexpected error \(error)")
            return []
        }
    }

    /// A manifest with one service whose body lines are `serviceLines` (indented under `- name: web`).
    static func oneService(_ serviceLines: String, top: String = "") -> String {
        let body = serviceLines.split(separator: "\n", omittingEmptySubsequences: false).map { "    \($0)" }
            .joined(separator: "\n")
        return "name: shop\nversion: 1.0.0\n\(top)services:\n  - name: web\n\(body)\n"
    }

    @Test("the full example parses into the expected manifest")
    func parsesFullExample() throws {
        let parsed = try ModuleManifest.parse(yaml: ModuleFixture.twoServiceManifest, file: "module.yaml")
        let manifest = parsed.manifest
        #expect(manifest.validate(file: "module.yaml", lines: parsed.lines).isEmpty)
        #expect(manifest.name == "shop")
        #expect(manifest.version == "1.0.0")
        #expect(manifest.sandbox == .strict)
        #expect(manifest.volumes == [.init(name: "data", path: "/var/lib/shop")])
        let api = try #require(manifest.services.first)
        #expect(api.exec == ["/bin/api", "--port", "8080"])
        #expect(api.environment == ["LOG_LEVEL": "info"])
        #expect(api.type == .notify)
        #expect(api.restart == .onFailure)
        #expect(api.restartSec == TimeSpan(milliseconds: 2000))
        #expect(api.watchdogSec == TimeSpan(milliseconds: 10_000))
        #expect(api.after == ["db"])
        #expect(api.requires == ["db"])
        #expect(api.healthCheck == .init(http: "http://127.0.0.1:8080/healthz", interval: .init(milliseconds: 5000)))
        #expect(api.readWritePaths == ["/var/lib/shop"])
        let db = try #require(manifest.services.last)
        #expect(db.type == .simple)
        #expect(db.restart == ModuleManifest.Service.defaultRestart)
        #expect(db.user == nil)
    }

    @Test("literal scalars stay literal: version 1.10, restart no")
    func literalScalars() throws {
        let parsed = try ModuleManifest.parse(
            yaml: "name: a\nversion: 1.10\nservices:\n  - name: s\n    exec: [/bin/s]\n    restart: no\n", file: "m")
        #expect(parsed.manifest.version == "1.10")
        #expect(parsed.manifest.services.first?.restart == ModuleManifest.RestartPolicy.no)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var label: String
        var yaml: String
        var field: String
        var reason: String
        var testDescription: String { label }
    }

    static let cases: [Case] = [
        Case(label: "missing name", yaml: "version: 1\n", field: "name", reason: "is required"),
        Case(
            label: "unknown top-level key", yaml: "name: a\nversion: 1\nservice: []\n", field: "service",
            reason: "unknown key"),
        Case(
            label: "misspelt service key", yaml: oneService("exec: [/bin/web]\nrestartsec: 5"),
            field: "services[0].restartsec", reason: "unknown key"),
        Case(
            label: "exec not a list", yaml: oneService("exec: /bin/web"), field: "services[0].exec",
            reason: "list of strings"),
        Case(
            label: "unknown type", yaml: oneService("exec: [/bin/web]\ntype: forking"), field: "services[0].type",
            reason: "unknown value \"forking\""),
        Case(
            label: "unknown restart", yaml: oneService("exec: [/bin/web]\nrestart: sometimes"),
            field: "services[0].restart", reason: "known: no, on-success"),
        Case(
            label: "bad duration", yaml: oneService("exec: [/bin/web]\nrestartSec: 5 minutes"),
            field: "services[0].restartSec", reason: "not a duration"),
        Case(
            label: "health check with both probes",
            yaml: oneService("exec: [/bin/web]\nhealthCheck: {http: \"http://x/\", exec: [/bin/web]}"),
            field: "services[0].healthCheck", reason: "exactly one"),
        Case(
            label: "unknown sandbox", yaml: oneService("exec: [/bin/web]", top: "sandbox: paranoid\n"),
            field: "sandbox", reason: "known: default, strict, trusted"),
        Case(
            label: "bad module name", yaml: "name: Shop_1\nversion: 1\n", field: "name",
            reason: "not a valid module name"),
        Case(
            label: "bad version", yaml: "name: shop\nversion: ../1\n", field: "version", reason: "not a valid version"),
        Case(
            label: "bad service name",
            yaml: oneService("exec: [/bin/web]").replacingOccurrences(of: "name: web", with: "name: Web.1"),
            field: "services[0].name", reason: "not a valid service name"),
        Case(
            label: "duplicate service names",
            yaml:
                "name: shop\nversion: 1\nservices:\n  - name: web\n    exec: [/bin/web]\n  - name: web\n    exec: [/bin/web]\n",
            field: "services[1].name", reason: "duplicate service name \"web\" (also services[0])"),
        Case(
            label: "relative exec", yaml: oneService("exec: [bin/web]"), field: "services[0].exec[0]",
            reason: "absolute path"),
        Case(
            label: "exec with ..", yaml: oneService("exec: [/bin/../../usr/bin/evil]"), field: "services[0].exec[0]",
            reason: ". or .. components"),
        Case(
            label: "empty exec", yaml: oneService("exec: []"), field: "services[0].exec", reason: "must name a program"),
        Case(
            label: "newline in an argument", yaml: oneService("exec: [/bin/web, \"--x\\nExecStartPre=/bin/evil\"]"),
            field: "services[0].exec[1]", reason: "a line break"),
        Case(
            label: "NUL in an environment value", yaml: oneService("exec: [/bin/web]\nenv: {FOO: \"a\\0b\"}"),
            field: "services[0].env.FOO", reason: "a NUL byte"),
        Case(
            label: "tab in the user", yaml: oneService("exec: [/bin/web]\nuser: \"root\\tx\""),
            field: "services[0].user", reason: "a control character"),
        Case(
            label: "= in a variable name", yaml: oneService("exec: [/bin/web]\nenv: {\"A=B\": x}"),
            field: "services[0].env.A=B", reason: "not a valid variable name"),
        Case(
            label: "leading [ in an argument", yaml: oneService("exec: [/bin/web, \"[Service]\"]"),
            field: "services[0].exec[1]", reason: "must not start with \"[\""),
        Case(
            label: "leading = in an argument", yaml: oneService("exec: [/bin/web, \"=x\"]"),
            field: "services[0].exec[1]", reason: "must not start with \"=\""),
        Case(
            label: "bad user", yaml: oneService("exec: [/bin/web]\nuser: \"Root User\""), field: "services[0].user",
            reason: "not a user name"),
        Case(
            label: "unknown dependency", yaml: oneService("exec: [/bin/web]\nafter: [db]"),
            field: "services[0].after[0]", reason: "unknown service \"db\""),
        Case(
            label: "depends on itself", yaml: oneService("exec: [/bin/web]\nrequires: [web]"),
            field: "services[0].requires[0]", reason: "dependency cycle: web → web"),
        Case(
            label: "three-service cycle",
            yaml: """
                name: shop
                version: 1
                services:
                  - {name: a, exec: [/bin/a], after: [b]}
                  - {name: b, exec: [/bin/b], requires: [c]}
                  - {name: c, exec: [/bin/c], after: [a]}
                """,
            field: "services[0].after[0]", reason: "dependency cycle: a → b → c → a"),
        Case(
            label: "oneshot with restart always", yaml: oneService("exec: [/bin/web]\ntype: oneshot\nrestart: always"),
            field: "services[0].restart", reason: "not allowed for type oneshot"),
        Case(
            label: "zero watchdog", yaml: oneService("exec: [/bin/web]\nwatchdogSec: 0"),
            field: "services[0].watchdogSec", reason: "greater than 0"),
        Case(
            label: "read-write path with a space",
            yaml: oneService("exec: [/bin/web]\nreadWritePaths: [\"/var/lib/a b\"]"),
            field: "services[0].readWritePaths[0]", reason: "contains \" \""),
        Case(
            label: "read-write root", yaml: oneService("exec: [/bin/web]\nreadWritePaths: [/]"),
            field: "services[0].readWritePaths[0]", reason: "must not be /"),
        Case(
            label: "health URL not http",
            yaml: oneService("exec: [/bin/web]\nhealthCheck: {http: \"file:///etc/passwd\"}"),
            field: "services[0].healthCheck.http", reason: "http:// or https://"),
        Case(
            label: "volume path escaping", yaml: oneService("exec: [/bin/web]", top: "volumes: {data: /var/../etc}\n"),
            field: "volumes.data", reason: ". or .. components"),
        Case(
            label: "volume name unsafe", yaml: oneService("exec: [/bin/web]", top: "volumes: {Data_1: /var/data}\n"),
            field: "volumes.Data_1", reason: "not a valid volume name"),
    ]

    @Test("each invalid manifest is refused with the field named", arguments: cases)
    func refusesWithField(_ testCase: Case) {
        let issues = Self.issues(testCase.yaml)
        let match = issues.first { $0.field == testCase.field && $0.reason.contains(testCase.reason) }
        #expect(match != nil, "expected \(testCase.field): …\(testCase.reason)…, got \(issues.map(\.description))")
        #expect(issues.allSatisfy { $0.file == "module.yaml" })
    }

    @Test("the valid baseline of the cases has no issues")
    func baselineIsValid() {
        #expect(Self.issues(Self.oneService("exec: [/bin/web]")).isEmpty)
    }

    @Test("issues carry the line of the field and all problems are reported at once")
    func linesAndAllProblems() throws {
        let yaml = """
            name: shop
            version: 1.0.0
            services:
              - name: web
                exec: [web]
                user: "a b"
            """
        let issues = Self.issues(yaml)
        let exec = try #require(issues.first { $0.field == "services[0].exec[0]" })
        #expect(exec.line == 5)
        #expect(exec.description.hasPrefix("module.yaml:5: services[0].exec[0]: "))
        let user = try #require(issues.first { $0.field == "services[0].user" })
        #expect(user.line == 6)
    }

    @Test("the validation error maps to invalidInput and lists every issue")
    func musterError() {
        let error = ModuleManifest.ValidationError(issues: [
            .init(file: "m.yaml", field: "name", reason: "bad", line: 1),
            .init(file: "m.yaml", field: "version", reason: "worse", line: 2),
        ])
        #expect(error.musterError.code == .invalidInput)
        #expect(error.musterError.message.contains("m.yaml:1: name: bad"))
        #expect(error.musterError.message.contains("m.yaml:2: version: worse"))
    }

    @Test("time spans parse systemd-style and encode as milliseconds")
    func timeSpans() {
        #expect(TimeSpan(parsing: "5") == TimeSpan(milliseconds: 5000))
        #expect(TimeSpan(parsing: "250ms") == TimeSpan(milliseconds: 250))
        #expect(TimeSpan(parsing: "2min") == TimeSpan(milliseconds: 120_000))
        #expect(TimeSpan(parsing: "1h")?.description == "3600000ms")
        #expect(TimeSpan(parsing: "8d") == nil)
        #expect(TimeSpan(parsing: "-1s") == nil)
        #expect(TimeSpan(parsing: "999999h") == nil)
        #expect(TimeSpan(milliseconds: 1500).duration == .milliseconds(1500))
    }
}
