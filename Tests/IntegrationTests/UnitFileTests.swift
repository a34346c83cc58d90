import Foundation
import Testing

/// `units/*.service` are valid for systemd 252: `systemd-analyze verify --man=no` exits 0 and prints nothing.
///
/// `verify` checks that `ExecStart=` is executable, so each unit is copied with `/usr/local/bin/…` replaced by the
/// built binary. It exits 0 on warnings (unknown directive, bad value), hence any stderr output is a failure.
@Suite("systemd units")
struct UnitFileTests {
    static let unitsDirectory: String = {
        // Tests/IntegrationTests/UnitFileTests.swift → repository root.
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("units").path
    }()

    static func verify(unitNamed name: String, contents: String) async throws -> CommandResult {
        let scratch = try ScratchDirectory("unit")
        defer { scratch.remove() }
        let path = "\(scratch.path)/\(name)"
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return try await runCommand("/usr/bin/systemd-analyze", ["verify", "--man=no", path])
    }

    static func localized(_ unit: String) throws -> String {
        let text = try String(contentsOfFile: "\(unitsDirectory)/\(unit)", encoding: .utf8)
        return
            text
            .replacingOccurrences(of: "/usr/local/bin/muster-agent ", with: "\(Binaries.agent) ")
            .replacingOccurrences(of: "/usr/local/bin/muster ", with: "\(Binaries.muster) ")
    }

    @Test("unit verifies without any output", arguments: ["muster-coordinator.service", "muster-agent.service"])
    func verifies(unit: String) async throws {
        try Binaries.check()
        let text = try Self.localized(unit)
        #expect(text.contains("ExecStart=\(Binaries.directory)/"), "ExecStart should point at the built binary")
        #expect(text.contains("Type=notify"))
        #expect(text.contains("WatchdogSec="))
        let result = try await Self.verify(unitNamed: unit, contents: text)
        #expect(result.status == 0, "systemd-analyze verify exit \(result.status): \(result.stderr)")
        #expect(result.stderr.isEmpty, "systemd-analyze verify printed: \(result.stderr)")
    }

    /// The check above can fail: a unit with a typo in a directive produces output (and exit 0).
    @Test("a unit with an unknown directive is reported")
    func unknownDirectiveIsReported() async throws {
        try Binaries.check()
        let broken = try Self.localized("muster-agent.service")
            .replacingOccurrences(of: "WatchdogSec=", with: "WatchdogSecs=")
        let result = try await Self.verify(unitNamed: "muster-agent.service", contents: broken)
        #expect(!result.stderr.isEmpty)
        #expect(result.stderr.contains("WatchdogSecs"))
    }
}
