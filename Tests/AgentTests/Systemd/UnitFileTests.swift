import Foundation
import Shared
import Testing

@testable import Agent

@Suite("unit files")
struct UnitFileTests {
    static func sample(sandbox: SandboxProfile = .default) throws -> UnitFile {
        UnitFile(
            owner: "web/api",
            unit: .init(description: "Web API (module web)", after: [try UnitName("network.target")]),
            service: .init(
                type: .notify, execStart: ["/bin/true", "--port", "8080"], restart: .onFailure,
                restartSec: .milliseconds(1500), watchdogSec: .seconds(10),
                environment: [.init("PORT", "8080"), .init("GREETING", "hello world")],
                user: "root", readWritePaths: ["/var/lib/web"], sandbox: sandbox,
                standardOutput: .append("/tmp/web.log"), standardError: .inherit),
            install: .init(wantedBy: [try UnitName("default.target")]))
    }

    @Test("a service unit renders every directive")
    func renders() throws {
        let text = try Self.sample().render()
        let lines = Set(text.split(separator: "\n").map(String.init))
        for expected in [
            "[Unit]", "Description=Web API (module web)", "X-Muster-Owner=web/api", "After=network.target",
            "[Service]", "Type=notify", #"ExecStart="/bin/true" "--port" "8080""#, "Restart=on-failure",
            "RestartSec=1500ms", "WatchdogSec=10000ms", #"Environment="PORT=8080""#,
            #"Environment="GREETING=hello world""#, "User=root", "ReadWritePaths=/var/lib/web",
            "StandardOutput=append:/tmp/web.log", "StandardError=inherit", "ProtectSystem=strict",
            "[Install]", "WantedBy=default.target",
        ] {
            #expect(lines.contains(expected), "missing line \(expected) in\n\(text)")
        }
        #expect(UnitFile.owner(inContents: text) == "web/api")
    }

    @Test("specifiers, quotes, backslashes and $ are escaped")
    func escaping() throws {
        let line = try UnitFile.commandLine(
            ["/bin/echo", "100%", "%n", "say \"hi\"", "it's", "back\\slash", "$HOME", "${X}", ";", ""],
            field: "ExecStart")
        #expect(
            line == #""/bin/echo" "100%%" "%%n" "say \"hi\"" "it's" "back\\slash" "$$HOME" "$${X}" \; """#)
        #expect(try UnitFile.freeText("50% done", field: "d") == "50%% done")
        #expect(try UnitFile.quote("A=$x %i", field: "e", dollar: false) == #""A=$x %%i""#)
    }

    /// One mutation per field; each carries an injection attempt and must be refused naming that field.
    static let injections: [(String, @Sendable (inout UnitFile) -> Void)] = [
        ("Unit.Description", { $0.unit.description = "x\n[Service]\nExecStartPre=/bin/evil" }),
        ("Unit.Description", { $0.unit.description = "[Service]" }),
        ("Unit.Description", { $0.unit.description = "=x" }),
        ("Unit.Description", { $0.unit.description = "trailing\\" }),
        ("Unit.Description", { $0.unit.description = "cr\rExecStart=/bin/evil" }),
        ("Unit.X-Muster-Owner", { $0.owner = "web\nExecStart=/bin/evil" }),
        ("Service.ExecStart[0]", { $0.service?.execStart = ["relative/bin"] }),
        ("Service.ExecStart[0]", { $0.service?.execStart[0] = "/bin/true\nExecStartPre=/bin/evil" }),
        ("Service.ExecStart[2]", { $0.service?.execStart = ["/bin/true", "a", "b\nExecStartPre=/bin/evil"] }),
        ("Service.ExecStart[1]", { $0.service?.execStart = ["/bin/true", "nul\0byte"] }),
        ("Service.ExecStart[1]", { $0.service?.execStart = ["/bin/true", "bell\u{7}"] }),
        ("Service.Environment.PORT", { $0.service?.environment = [.init("PORT", "1\n[Install]")] }),
        ("Service.Environment.A B", { $0.service?.environment = [.init("A B", "1")] }),
        ("Service.Environment.X=Y", { $0.service?.environment = [.init("X=Y", "1")] }),
        ("Service.User", { $0.service?.user = "root\nExecStartPre=/bin/evil" }),
        ("Service.User", { $0.service?.user = "Root Admin" }),
        ("Service.Group", { $0.service?.group = "=wheel" }),
        ("Service.WorkingDirectory", { $0.service?.workingDirectory = "/srv/../etc" }),
        ("Service.WorkingDirectory", { $0.service?.workingDirectory = "relative" }),
        ("Service.ReadWritePaths[0]", { $0.service?.readWritePaths = ["/srv/a b"] }),
        ("Service.ReadWritePaths[1]", { $0.service?.readWritePaths = ["/srv/ok", "/srv/%h"] }),
        ("Service.ReadWritePaths[0]", { $0.service?.readWritePaths = ["/srv\n[Service]"] }),
        ("Service.StandardOutput", { $0.service?.standardOutput = .append("/tmp/x\nExecStartPre=/bin/evil") }),
        ("Service.RestartSec", { $0.service?.restartSec = .milliseconds(-5) }),
        ("Service.WatchdogSec", { $0.service?.watchdogSec = .zero }),
        ("Service.WatchdogSec", { $0.service?.watchdogSec = .microseconds(1500) }),
        (
            "Service.Restart",
            {
                $0.service?.type = .oneshot
                $0.service?.restart = .always
            }
        ),
    ]

    @Test("injection attempts are refused with the field named", arguments: 0..<injections.count)
    func injection(index: Int) throws {
        let (field, mutate) = Self.injections[index]
        var file = try Self.sample()
        mutate(&file)
        let error = try #require(throws: UnitFile.ValidationError.self) { try file.render() }
        #expect(error.field == field, "\(error)")
        let muster = error.musterError(unit: "muster-web-api.service")
        #expect(muster.code == .invalidInput)
        #expect(muster.message.contains(field))
    }

    static let mountInjections: [(String, @Sendable (inout UnitFile.MountSection) -> Void)] = [
        ("Mount.What", { $0.what = "/dev/x\n[Mount]" }),
        ("Mount.What", { $0.what = "a b" }),
        ("Mount.Where", { $0.where = "/srv/x\nOptions=exec" }),
        ("Mount.Type", { $0.type = "erofs\n" }),
        ("Mount.Options[1]", { $0.options = ["ro", "x\nWhat=/dev/sda"] }),
        ("Mount.Options[0]", { $0.options = ["lowerdir=a b"] }),
    ]

    @Test("mount section injections are refused with the field named", arguments: 0..<mountInjections.count)
    func mountInjection(index: Int) throws {
        let (field, mutate) = Self.mountInjections[index]
        var section = UnitFile.MountSection(what: "/var/lib/muster/meta.erofs", where: "/srv/m", type: "erofs")
        mutate(&section)
        let file = UnitFile(owner: "m/mount", mount: section)
        let error = try #require(throws: UnitFile.ValidationError.self) { try file.render() }
        #expect(error.field == field, "\(error)")
    }

    // MARK: - systemd-analyze verify

    /// `systemd-analyze verify --man=no` exits 0 on warnings, so any stderr output is a failure (TESTING.md).
    static func verify(_ text: String, as name: String, scope: SystemdManager.Scope = .system) throws -> CommandOutput {
        let dir = try TemporaryDirectory("verify")
        defer { dir.remove() }
        let path = "\(dir.path)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        // `--user` resolves the user unit paths and needs a runtime directory.
        return try runCommand(
            "/usr/bin/systemd-analyze", (scope == .user ? ["--user"] : []) + ["verify", "--man=no", path],
            environment: scope == .user ? ["XDG_RUNTIME_DIR": dir.path] : [:])
    }

    @Test(
        "generated service units pass systemd-analyze verify without output",
        .enabled(if: Self.hasAnalyze), arguments: SandboxProfile.allCases, SystemdManager.Scope.allCases)
    func verifyService(profile: SandboxProfile, scope: SystemdManager.Scope) throws {
        var file = try Self.sample(sandbox: profile)
        file.scope = scope
        file.service?.execStart = ["/bin/sh", "-c", "echo \"$1\" 100% $$HOME; exit 0", "sh", "a b", "back\\slash", ";"]
        file.service?.user = nil
        let result = try Self.verify(try file.render(), as: "muster-web-api.service", scope: scope)
        #expect(result.status == 0, "verify exit \(result.status): \(result.stderr)")
        #expect(result.stderr.isEmpty, "verify printed: \(result.stderr)")
    }

    @Test("generated mount units pass systemd-analyze verify without output", .enabled(if: Self.hasAnalyze))
    func verifyMount() throws {
        let mountPoint = "/srv/muster/my-module@1.0"
        let name = try UnitName.mount(where: mountPoint)
        let file = UnitFile(
            owner: "my-module/mount",
            unit: .init(description: "Module my-module 1.0"),
            mount: .init(
                what: "/var/lib/muster/images/meta.erofs", where: mountPoint, type: "erofs", options: ["ro", "loop"]))
        let result = try Self.verify(try file.render(), as: name.rawValue)
        #expect(result.status == 0, "verify exit \(result.status): \(result.stderr)")
        #expect(result.stderr.isEmpty, "verify printed: \(result.stderr)")
    }

    /// The check above can fail: a broken unit produces output.
    @Test("systemd-analyze verify reports a bad unit", .enabled(if: Self.hasAnalyze))
    func verifyCatchesErrors() throws {
        let text = try Self.sample(sandbox: .trusted).render().replacingOccurrences(
            of: "RestartSec=", with: "RestartSecs=")
        let result = try Self.verify(text, as: "muster-web-api.service")
        #expect(result.stderr.contains("RestartSecs"))
    }

    static var hasAnalyze: Bool { access("/usr/bin/systemd-analyze", X_OK) == 0 }
}
