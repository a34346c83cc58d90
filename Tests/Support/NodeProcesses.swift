import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// cgroup and process helpers shared by the simulated nodes (``SystemNode`` here, `UserManager` in AgentTests).
public enum NodeProcesses {
    /// Every mounted cgroup hierarchy (`/sys/fs/cgroup/<controller>` with a `cgroup.procs`).
    public static func hierarchies() -> [String] {
        let root = "/sys/fs/cgroup"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return entries.sorted().map { "\(root)/\($0)" }.filter {
            FileManager.default.fileExists(atPath: "\($0)/cgroup.procs")
        }
    }

    /// Creates the cgroup `name` in every hierarchy (cpuset v1 needs cpus/mems copied before a task can join) and
    /// returns the shell command that moves the running shell (`$$`) into all of them.
    public static func makeCgroup(_ name: String) throws -> String {
        let fm = FileManager.default
        let all = hierarchies()
        for h in all { try fm.createDirectory(atPath: "\(h)/\(name)", withIntermediateDirectories: true) }
        let cpuset = "/sys/fs/cgroup/cpuset"
        if fm.fileExists(atPath: "\(cpuset)/cpuset.cpus") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = try String(contentsOfFile: "\(cpuset)/\(file)", encoding: .utf8)
                try value.write(toFile: "\(cpuset)/\(name)/\(file)", atomically: false, encoding: .utf8)
            }
        }
        return all.map { "echo $$ > '\($0)/\(name)/cgroup.procs'" }.joined(separator: " && ")
    }

    /// SIGKILLs what is left in the cgroup `name` (services with KillMode=none and the like), by PID, for up to
    /// `rounds` rounds.
    public static func killLeftovers(inCgroup name: String, rounds: Int) {
        let all = hierarchies()
        for _ in 0..<rounds {
            var leftovers: [pid_t] = []
            for h in all { leftovers += pids(under: "\(h)/\(name)") }
            if leftovers.isEmpty { break }
            for p in Set(leftovers) { kill(p, SIGKILL) }
            usleep(100_000)
        }
    }

    /// Removes the cgroup `name` from every hierarchy.
    public static func removeCgroup(_ name: String) {
        for h in hierarchies() { removeTree("\(h)/\(name)") }
    }

    /// Starts `argv` (absolute path first) with stdin from /dev/null and stdout+stderr appended to `log`, a minimal
    /// environment, and returns its PID (the caller reaps it).
    public static func spawn(_ argv: [String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        let cEnv: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nil]
        defer { for p in cEnv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
        guard rc == 0 else { throw NodeError("posix_spawn failed: \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Every PID in the cgroup `dir` and below.
    public static func pids(under dir: String) -> [pid_t] {
        guard let enumerator = FileManager.default.enumerator(atPath: dir) else { return [] }
        var out: [pid_t] = []
        let files =
            ["cgroup.procs"]
            + enumerator.compactMap { ($0 as? String).flatMap { $0.hasSuffix("/cgroup.procs") ? $0 : nil } }
        for f in files {
            let text = (try? String(contentsOfFile: "\(dir)/\(f)", encoding: .utf8)) ?? ""
            out += text.split(separator: "\n").compactMap { pid_t($0) }
        }
        return out
    }

    /// cgroup directories are removed with rmdir, deepest first (their files cannot be unlinked).
    public static func removeTree(_ dir: String) {
        guard FileManager.default.fileExists(atPath: dir) else { return }
        let subdirs = (FileManager.default.subpaths(atPath: dir) ?? [])
            .filter { !$0.contains("/cgroup.") && !$0.hasPrefix("cgroup.") }
            .map { "\(dir)/\($0)" }
            .filter {
                var isDir: ObjCBool = false
                return FileManager.default.fileExists(atPath: $0, isDirectory: &isDir) && isDir.boolValue
            }
            .sorted { $0.count > $1.count }
        for d in subdirs { rmdir(d) }
        rmdir(dir)
    }
}

/// A simulated node could not be started or used.
public struct NodeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
