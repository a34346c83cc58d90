import Foundation

@testable import Coordinator

/// A module directory in a fresh temporary directory: `module.yaml`, `rootfs/…`, and room for outputs.
/// Removed by ``remove()`` (call it in a `defer`).
struct ModuleFixture {
    let base: String
    var directory: String { "\(base)/module" }
    var rootfs: String { "\(directory)/rootfs" }
    var manifestPath: String { "\(directory)/module.yaml" }

    static let twoServiceManifest = """
        name: shop
        version: 1.0.0
        sandbox: strict
        services:
          - name: api
            exec: [/bin/api, --port, "8080"]
            env: { LOG_LEVEL: info }
            type: notify
            restart: on-failure
            restartSec: 2s
            watchdogSec: 10s
            after: [db]
            requires: [db]
            healthCheck: { http: "http://127.0.0.1:8080/healthz", interval: 5s }
            readWritePaths: [/var/lib/shop]
          - name: db
            exec: [/bin/db]
        volumes:
          data: /var/lib/shop
        """

    init() throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("muster-module-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: "\(base)/module/rootfs", withIntermediateDirectories: true)
    }

    /// The standard two-service fixture: executables, a config file, two identical files, an empty file,
    /// a relative symlink, a nested directory.
    static func standard() throws -> ModuleFixture {
        let fixture = try ModuleFixture()
        try fixture.writeManifest(twoServiceManifest)
        try fixture.write("/bin/api", "#!/bin/sh\necho api\n", mode: 0o755)
        try fixture.write("/bin/db", "#!/bin/sh\necho db\n", mode: 0o755)
        try fixture.write("/etc/shop/config.toml", "port = 8080\n", mode: 0o644)
        try fixture.write("/share/a.txt", "same content\n", mode: 0o644)
        try fixture.write("/share/b.txt", "same content\n", mode: 0o600)
        try fixture.write("/share/empty", "", mode: 0o644)
        try fixture.write("/share/big.bin", String(repeating: "0123456789abcdef", count: 70_000), mode: 0o644)
        try fixture.symlink("/bin/api-link", to: "api")
        try fixture.symlink("/etc/config", to: "shop/config.toml")
        return fixture
    }

    func writeManifest(_ text: String) throws {
        try text.write(toFile: manifestPath, atomically: true, encoding: .utf8)
    }

    func write(_ path: String, _ content: String, mode: Int) throws {
        let full = rootfs + path
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try content.write(toFile: full, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: full)
    }

    func symlink(_ path: String, to target: String) throws {
        let full = rootfs + path
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: full, withDestinationPath: target)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: base)
    }
}

extension ModuleFixture {
    /// Runs `/bin/sh -c script` and collects its output (tests only; the product uses swift-subprocess).
    static func shell(_ script: String) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read before waiting so a chatty command cannot fill the pipe and block.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (
            process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self)
        )
    }
}
