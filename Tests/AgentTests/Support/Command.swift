import Foundation

/// Output of a finished helper command (`systemd-escape`, `systemd-analyze`).
struct CommandOutput: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `path args…` to completion and captures stdout and stderr (for small outputs only).
func runCommand(_ path: String, _ arguments: [String], environment: [String: String] = [:]) throws -> CommandOutput {
    let process = Process()
    if !environment.isEmpty {
        // Only the child's environment: the test process's own is never changed.
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    }
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read before waiting so a chatty child cannot block on a full pipe.
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CommandOutput(
        status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
        stderr: String(decoding: stderr, as: UTF8.self))
}

/// A temporary directory removed by ``remove()``.
struct TemporaryDirectory {
    let path: String
    init(_ label: String) throws {
        var random = SystemRandomNumberGenerator()
        path = "/tmp/muster-\(label)-\(getpid())-\(String(random.next() % 0xFFFFFF, radix: 16))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { _ = try? FileManager.default.removeItem(atPath: path) }
}
