import ArgumentParser
import Crypto
import Foundation
import Shared
import Testing

@testable import Agent

@Suite("agent module configuration, trusted keys and health report units")
struct AgentModuleConfigurationTests {
    @Test("run --systemd user and friends end up in the configuration; bad values are usage errors")
    func runOptions() throws {
        let run = try RunCommand.parse([
            "--state-dir", "/tmp/x", "--systemd", "user", "--unit-prefix", "acme", "--module-key", "/k1.pem",
            "--module-key", "/k2.pem",
        ])
        #expect(run.moduleOptions.systemd == "user")
        #expect(run.moduleOptions.unitPrefix == "acme")
        #expect(run.moduleOptions.moduleKey == ["/k1.pem", "/k2.pem"])
        #expect(throws: (any Error).self) { try RunCommand.parse(["--systemd", "session"]) }
        #expect(throws: (any Error).self) { try RunCommand.parse(["--unit-prefix", "Bad-Prefix"]) }
    }

    @Test("unit directories per scope")
    func unitDirectories() {
        #expect(AgentConfiguration.Modules().effectiveUnitDirectory(environment: [:]) == "/etc/systemd/system")
        let user = AgentConfiguration.Modules(systemd: .user)
        #expect(user.effectiveUnitDirectory(environment: ["HOME": "/home/a"]) == "/home/a/.config/systemd/user")
        #expect(user.effectiveUnitDirectory(environment: ["XDG_CONFIG_HOME": "/c"]) == "/c/systemd/user")
        #expect(AgentConfiguration.Modules(unitDirectory: "/u").effectiveUnitDirectory(environment: [:]) == "/u")
    }

    @Test("module keys: PEM written by openssl is read; anything else is refused with the file named")
    func trustedKeys() throws {
        let key = Curve25519.Signing.PrivateKey()
        let pem = TrustedModuleKeys.pem(key.publicKey)
        #expect(try TrustedModuleKeys.parse(pem, source: "k.pem").rawRepresentation == key.publicKey.rawRepresentation)
        // The same key as `openssl pkey -pubout` writes it, if openssl is there to ask.
        let dir = try TemporaryDirectory("modkey")
        defer { dir.remove() }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") {
            _ = try runCommand("/usr/bin/openssl", ["genpkey", "-algorithm", "ed25519", "-out", "\(dir.path)/k"])
            let out = try runCommand("/usr/bin/openssl", ["pkey", "-in", "\(dir.path)/k", "-pubout"])
            #expect(out.status == 0)
            try out.stdout.write(toFile: "\(dir.path)/k.pub", atomically: true, encoding: .utf8)
            #expect(try TrustedModuleKeys.load(["\(dir.path)/k.pub"]).count == 1)
        }
        let error = #expect(throws: MusterError.self) {
            try TrustedModuleKeys.parse(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", source: "bad.pem")
        }
        #expect(error?.code == .invalidInput)
        #expect(error?.message.contains("bad.pem") == true)
        #expect(
            (#expect(throws: MusterError.self) { try TrustedModuleKeys.load(["\(dir.path)/none.pem"]) })?.code
                == .notFound)
    }

    @Test("health reports carry units when there is a source, and reports without the key still decode")
    func healthReportUnits() async throws {
        let status = UnitStatus(
            name: "muster-shop-api.service", module: "shop", activeState: "active", subState: "running", nRestarts: 2,
            mainPID: 42, result: "success")
        let collector = HealthCollector(stateDirectory: NSTemporaryDirectory(), units: { [status] })
        let report = await collector.report()
        #expect(report.units == [status])
        #expect(await HealthCollector(stateDirectory: NSTemporaryDirectory()).report().units == nil)

        let encoder = JSONEncoder()
        let decoded = try JSONDecoder().decode(HealthReport.self, from: try encoder.encode(report))
        #expect(decoded.units == [status])
        var old = try JSONSerialization.jsonObject(with: try encoder.encode(report)) as? [String: Any] ?? [:]
        old["units"] = nil
        let legacy = try JSONDecoder().decode(
            HealthReport.self, from: try JSONSerialization.data(withJSONObject: old))
        #expect(legacy.units == nil)
        #expect(legacy.agentVersion == report.agentVersion)
    }
}
