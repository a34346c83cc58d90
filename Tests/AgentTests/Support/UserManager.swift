import Foundation
import Synchronization
import TestSupport

@testable import Agent

#if canImport(Glibc)
    import Glibc
#endif

/// A private `systemd --user` manager (root) for one test: own cgroup in every hierarchy, own mount namespace
/// (tmpfs on `/run/systemd`), own XDG directories. A port of the reference `usermgr.sh`.
///
/// **Never start systemd without first moving it into its own cgroup** (TESTING.md): a manager started from the
/// root cgroup takes over the whole cgroup tree. The spawned shell writes its own PID into `mu-NAME/cgroup.procs`
/// of every hierarchy *before* it execs `unshare` and `systemd`, exactly as the recipe does.
///
/// Clean-up is by PID: SIGTERM to the manager (our child, reaped with `waitpid`), SIGKILL after 5 s, then SIGKILL
/// to every PID left in the node's cgroups, then the cgroup directories are removed.
final class UserManager: Sendable {
    let name: String
    let base: String
    let pid: pid_t
    private let cgroup: String
    private let reaped = Mutex(false)

    var runtimeDirectory: String { "\(base)/xdg" }
    /// `$XDG_CONFIG_HOME/systemd/user`: where the manager finds our units.
    var unitDirectory: String { "\(base)/cfg/systemd/user" }
    /// The session bus (dbus-daemon, socket-activated by the manager), as `sd_bus_open_user` would find it.
    var busAddress: SDBus.Address { .bus("unix:path=\(runtimeDirectory)/bus") }
    /// The manager's private peer-to-peer socket, as `systemctl --user` uses it.
    var privateAddress: SDBus.Address { .direct("unix:path=\(runtimeDirectory)/systemd/private") }
    /// A scratch directory for test files (logs, scripts) outside the unit directory.
    var scratch: String { "\(base)/scratch" }
    var logPath: String { "\(base)/log" }

    private init(name: String, base: String, pid: pid_t, cgroup: String) {
        self.name = name
        self.base = base
        self.pid = pid
        self.cgroup = cgroup
    }

    /// Runs `body` with a fresh manager and always stops it afterwards.
    static func with<T>(_ body: (UserManager) async throws -> T) async throws -> T {
        let manager = try await start()
        do {
            let value = try await body(manager)
            manager.stop()
            return value
        } catch {
            manager.stop()
            throw error
        }
    }

    /// Boots a manager and waits (up to 10 s) until it reports `running` or `degraded`.
    static func start() async throws -> UserManager {
        var random = SystemRandomNumberGenerator()
        let id = String(random.next() % 0xFFFFFF, radix: 16)
        let name = "mu\(getpid())-\(id)"
        // Short base path: the bus socket path must fit in sockaddr_un (108 bytes). Not under /tmp: services
        // with PrivateTmp=yes (the sandbox profiles) would not see files there.
        let base = "/run/muster-tests/\(name)"
        let cgroup = "muster-test-\(name)"
        let fm = FileManager.default
        for dir in ["xdg", "cfg/systemd/user", "data", "home", "state", "cache", "scratch"] {
            try fm.createDirectory(atPath: "\(base)/\(dir)", withIntermediateDirectories: true)
        }
        chmod("\(base)/xdg", 0o700)
        let moves = try NodeProcesses.makeCgroup(cgroup)
        let env = [
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=\(base)/home", "USER=root", "LOGNAME=root",
            "XDG_RUNTIME_DIR=\(base)/xdg", "XDG_CONFIG_HOME=\(base)/cfg", "XDG_DATA_HOME=\(base)/data",
            "XDG_STATE_HOME=\(base)/state", "XDG_CACHE_HOME=\(base)/cache",
        ].joined(separator: " ")
        // Move into the cgroups first, then a private mount namespace with a tmpfs on /run/systemd (so
        // sd_booted() is true only inside), then exec systemd with a clean environment. Every step execs, so the
        // PID we spawn is the manager's PID.
        let script = """
            \(moves) && exec unshare -m --propagation private sh -c 'mount -t tmpfs -o mode=755 tmpfs /run/systemd \
            && mkdir /run/systemd/system && exec env -i \(env) /lib/systemd/systemd --user --log-target=console \
            --log-level=notice'
            """
        let pid = try spawn(["/usr/bin/setsid", "/bin/sh", "-c", script], log: "\(base)/log")
        let manager = UserManager(name: name, base: base, pid: pid, cgroup: cgroup)
        do {
            try await manager.waitUntilRunning()
        } catch {
            manager.stop()
            throw error
        }
        return manager
    }

    static func spawn(_ argv: [String], log: String) throws -> pid_t {
        do {
            return try NodeProcesses.spawn(argv, log: log)
        } catch let error as NodeError {
            throw UserManagerError(error.description)
        }
    }

    private func waitUntilRunning() async throws {
        var lastState = "not connected"
        for _ in 0..<500 {
            if !isAlive {
                throw UserManagerError("manager \(name) exited while starting; log:\n\(log)")
            }
            if let systemd = try? await SystemdManager.connect(privateAddress),
                let state = try? await systemd.bus.perform({ c in
                    try c.stringProperty(
                        destination: nil, path: SystemdManager.managerPath,
                        interface: SystemdManager.managerInterface, member: "SystemState")
                })
            {
                lastState = state
                if state == "running" || state == "degraded" { return }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw UserManagerError("manager \(name) did not come up (state \(lastState)); log:\n\(log)")
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    private var isAlive: Bool {
        reaped.withLock { done in
            if done { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { done = true }
            return !done
        }
    }

    /// Stops the manager and everything left in its cgroups, by PID; removes the cgroups and the base directory.
    func stop() {
        if isAlive {
            kill(pid, SIGTERM)
            for _ in 0..<250 where isAlive { usleep(20_000) }
            if isAlive {
                kill(pid, SIGKILL)
                for _ in 0..<250 where isAlive { usleep(20_000) }
            }
        }
        // Services with KillMode=none and the like: kill what is left in the node's cgroups, by PID.
        NodeProcesses.killLeftovers(inCgroup: cgroup, rounds: 3)
        NodeProcesses.removeCgroup(cgroup)
        _ = try? FileManager.default.removeItem(atPath: base)
    }
}

struct UserManagerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
