import Foundation
import TestSupport

/// A PostgreSQL cluster of its own for a test that stops and starts the server (the shared harness server must
/// stay up for every other test). initdb + pg_ctl, as the `postgres` user when running as root.
final class ThrowawayCluster: Sendable {
    let directory: String
    let port: Int
    private static let bin = "/usr/lib/postgresql/15/bin"

    var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres?sslmode=disable" }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("muster-outage-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = try PostgresHarness.freePort()
        if getuid() == 0 { try Self.check(PostgresHarness.run("/bin/chown", ["postgres", directory]), "chown") }
        try Self.check(
            tool("initdb", ["-D", "\(directory)/data", "-U", "postgres", "-A", "trust", "--no-sync", "--no-instructions"]),
            "initdb")
        try start()
    }

    func start() throws {
        let options = "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off"
        try Self.check(
            tool("pg_ctl", ["-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-t", "30", "-o", options, "start"]),
            "pg_ctl start")
    }

    /// Fast shutdown: clients are disconnected at once.
    func stop() throws {
        try Self.check(tool("pg_ctl", ["-D", "\(directory)/data", "-m", "fast", "-w", "stop"]), "pg_ctl stop")
    }

    /// Stops the server (if running) and removes the directory.
    func destroy() {
        _ = try? tool("pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func tool(_ name: String, _ args: [String]) throws -> (status: Int32, output: String) {
        if getuid() == 0 {
            return try PostgresHarness.run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(Self.bin)/\(name)"] + args)
        }
        return try PostgresHarness.run("\(Self.bin)/\(name)", args)
    }

    private static func check(_ result: (status: Int32, output: String), _ what: String) throws {
        guard result.status == 0 else { throw PostgresHarness.HarnessError.failed("\(what): \(result.output)") }
    }
}
