import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A process started by a test, known by its PID, with stdout and stderr in a log file.
///
/// Tests clean up by PID (TESTING.md): ``kill(signal:)`` signals exactly this process, never a name.
/// `nsenter --net=` execs the target in place, so the PID is the daemon's own.
final class ChildProcess: Sendable {
    let name: String
    let pid: pid_t
    let logPath: String
    private let exitStatus = Mutex<Int32?>(nil)

    private init(name: String, pid: pid_t, logPath: String) {
        self.name = name
        self.pid = pid
        self.logPath = logPath
    }

    /// Starts `path args…`, optionally inside network namespace `netns` (through `nsenter --net=`).
    static func spawn(
        name: String, path: String, arguments: [String], netns: String? = nil,
        environment: [String: String] = [:], logPath: String
    ) throws -> ChildProcess {
        var argv = [path] + arguments
        if let netns { argv = ["/usr/bin/nsenter", "--net=/run/netns/\(netns)"] + argv }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Its own process group, so a terminal's Ctrl-C reaches the test runner only.
        resetSignals(&attr, extraFlags: Int32(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgs, cEnv)
        guard rc == 0 else { throw HarnessError("posix_spawn \(argv[0]) failed: \(String(cString: strerror(rc)))") }
        return ChildProcess(name: name, pid: pid, logPath: logPath)
    }

    /// Reaps the process if it has exited; returns its wait status then.
    private func poll() -> Int32? {
        exitStatus.withLock { status in
            if let status { return status }
            var s: Int32 = 0
            let r = waitpid(pid, &s, WNOHANG)
            if r == pid { status = s }
            return status
        }
    }

    var isRunning: Bool { poll() == nil }

    /// Exit code (or 128+signal) once the process ended.
    var exitCode: Int32? {
        guard let s = poll() else { return nil }
        let sig = s & 0x7f
        return sig == 0 ? (s >> 8) & 0xff : 128 + sig
    }

    func kill(signal: Int32) {
        guard isRunning else { return }
        _ = Glibc.kill(pid, signal)
    }

    /// Waits until the process has exited, polling; returns its exit code, or nil when `timeout` passed first.
    @discardableResult
    func waitForExit(timeout: Duration = .seconds(30)) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let code = exitCode { return code }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return exitCode
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit code.
    @discardableResult
    func stop(grace: Duration = .seconds(15)) async -> Int32? {
        kill(signal: SIGTERM)
        if let code = await waitForExit(timeout: grace) { return code }
        kill(signal: SIGKILL)
        return await waitForExit(timeout: .seconds(10))
    }

    /// Synchronous last-resort cleanup for `defer` blocks: SIGKILL and reap.
    func killAndReap() {
        guard isRunning else { return }
        _ = Glibc.kill(pid, SIGKILL)
        for _ in 0..<200 where isRunning { usleep(10_000) }
    }

    /// The last `limit` characters of the log, for failure messages.
    func logTail(_ limit: Int = 4000) -> String {
        guard let data = FileManager.default.contents(atPath: logPath) else { return "(no log)" }
        let text = String(decoding: data, as: UTF8.self)
        return String(text.suffix(limit))
    }
}

/// A child must not inherit the test runner's thread signal mask or ignored signals: `timeout` relies on
/// SIGALRM, and daemons on SIGTERM/SIGINT for a graceful shutdown.
func resetSignals(_ attr: inout posix_spawnattr_t, extraFlags: Int32 = 0) {
    var empty = sigset_t()
    sigemptyset(&empty)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &empty)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(Int32(POSIX_SPAWN_SETSIGMASK) | Int32(POSIX_SPAWN_SETSIGDEF) | extraFlags))
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The result of a command run to completion.
struct CommandResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion (optionally inside a netns) without blocking a cooperative thread on pipes:
/// output goes to temporary files that are read after exit.
func runCommand(
    _ path: String, _ arguments: [String], netns: String? = nil, environment: [String: String] = [:],
    timeout: Duration = .seconds(120)
) async throws -> CommandResult {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-cmd-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var argv = [path] + arguments
    if let netns { argv = ["/usr/bin/nsenter", "--net=/run/netns/\(netns)"] + argv }
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "\(dir)/out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, "\(dir)/err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    let cArgs = argv.map { strdup($0) } + [nil]
    let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for p in cArgs { free(p) }
        for p in cEnv { free(p) }
    }
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    resetSignals(&attr)
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgs, cEnv)
    guard rc == 0 else { throw HarnessError("posix_spawn \(argv[0]) failed: \(String(cString: strerror(rc)))") }

    let deadline = ContinuousClock.now + timeout
    var status: Int32 = 0
    while true {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { break }
        if ContinuousClock.now >= deadline {
            _ = kill(pid, SIGKILL)
            _ = waitpid(pid, &status, 0)
            throw HarnessError("\(argv.joined(separator: " ")) did not finish within \(timeout)")
        }
        try? await Task.sleep(for: .milliseconds(20))
    }
    let sig = status & 0x7f
    let code = sig == 0 ? (status >> 8) & 0xff : 128 + sig
    let out = String(decoding: FileManager.default.contents(atPath: "\(dir)/out") ?? Data(), as: UTF8.self)
    let err = String(decoding: FileManager.default.contents(atPath: "\(dir)/err") ?? Data(), as: UTF8.self)
    return CommandResult(status: code, stdout: out, stderr: err)
}

/// Synchronous variant for teardown paths (`defer`), for short commands like `ip link del`.
@discardableResult
func runCommandSync(_ path: String, _ arguments: [String]) -> Int32 {
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let argv = [path] + arguments
    let cArgs = argv.map { strdup($0) } + [nil]
    defer { for p in cArgs { free(p) } }
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    resetSignals(&attr)
    guard posix_spawn(&pid, path, &actions, &attr, cArgs, environ) == 0 else { return -1 }
    var status: Int32 = 0
    _ = waitpid(pid, &status, 0)
    return (status >> 8) & 0xff
}

/// Polls `condition` until it returns a value or `timeout` passes. A liveness bound, not a timing assertion:
/// the timeout is generous and only turns a hang into a failure with a message.
@discardableResult
func eventually<T>(
    _ what: String, timeout: Duration = .seconds(60), every: Duration = .milliseconds(200),
    _ condition: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    var lastError: (any Error)?
    while true {
        do {
            if let value = try await condition() { return value }
        } catch {
            lastError = error
        }
        if ContinuousClock.now >= deadline {
            throw HarnessError(
                "timed out after \(timeout) waiting for \(what)"
                    + (lastError.map { "; last error: \($0)" } ?? ""))
        }
        try await Task.sleep(for: every)
    }
}
