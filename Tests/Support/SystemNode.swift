import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A systemd **system** manager as PID 1 of new PID+mount+UTS namespaces ("one simulated node"), seeing only
/// the units in its own `SYSTEMD_UNIT_PATH`. A port of the reference `sysmgr.sh`.
///
/// As with ``UserManager``, the spawned shell moves itself into the node's own cgroup in every hierarchy before
/// it execs `unshare` and systemd (TESTING.md). The node's `/run` is a bind of `BASE/run`, so its system bus
/// socket is reachable from the test process at `BASE/run/dbus/system_bus_socket` (the manager's private socket
/// refuses peers outside its PID namespace; the bus does not).
///
/// In TestSupport so that AgentTests (which drive the bus in-process, `SDBus.Address.bus(node.busAddressString)`)
/// and IntegrationTests (which run the real `muster-agent` with `DBUS_SYSTEM_BUS_ADDRESS=node.busAddressString`)
/// share it. It talks to the node itself through `busctl --address` only, so it needs nothing of the Agent module.
///
/// The node's mount namespace is a private copy of the host's taken at boot: mounts made on the host before
/// ``start(netns:mountHelpers:)`` are visible in the node, later ones are not.
public final class SystemNode: Sendable {
    public let name: String
    public let base: String
    /// The `unshare` process (parent of the node's PID 1), our child.
    public let pid: pid_t
    private let cgroup: String
    /// The network namespace the node lives in, `nil` for the host's.
    public let netns: String?
    private let reaped = Mutex(false)

    /// Where the node's manager finds units (`SYSTEMD_UNIT_PATH`).
    public var unitDirectory: String { "\(base)/units" }
    /// The node's system bus socket on the host.
    public var busSocketPath: String { "\(base)/run/dbus/system_bus_socket" }
    /// The bus address as `DBUS_SYSTEM_BUS_ADDRESS` (and `sd_bus_set_address`) take it.
    public var busAddressString: String { "unix:path=\(busSocketPath)" }
    /// `BASE/run` on the host is `/run` inside the node.
    public func hostPath(ofNodeRun path: String) -> String { "\(base)/run/\(path)" }
    /// The node's journal files (journald runs with `Storage=volatile`), readable from the host.
    public var journalDirectory: String { "\(base)/run/log/journal" }
    public var log: String { (try? String(contentsOfFile: "\(base)/console", encoding: .utf8)) ?? "" }

    private init(name: String, base: String, pid: pid_t, cgroup: String, netns: String?) {
        self.netns = netns
        self.name = name
        self.base = base
        self.pid = pid
        self.cgroup = cgroup
    }

    public static func with<T>(
        netns: String? = nil, mountHelpers: String? = nil, _ body: (SystemNode) async throws -> T
    ) async throws -> T {
        let node = try await start(netns: netns, mountHelpers: mountHelpers)
        do {
            let value = try await body(node)
            await node.stop()
            return value
        } catch {
            await node.stop()
            throw error
        }
    }

    /// Boots a node.
    /// - Parameters:
    ///   - netns: a network namespace (`/run/netns/NAME`) the node lives in; the host's network otherwise.
    ///   - mountHelpers: a directory whose files (e.g. `mount.nfs4`) are laid over `/usr/sbin` in the node's mount
    ///     namespace only (a read-only overlay), so `mount(8)` inside the node finds them.
    public static func start(netns: String? = nil, mountHelpers: String? = nil) async throws -> SystemNode {
        var random = SystemRandomNumberGenerator()
        let id = String(random.next() % 0xFFFFFF, radix: 16)
        let name = "ms\(getpid())-\(id)"
        // Not under /run: the node binds BASE/run over /run before it binds BASE/hostname.
        let base = "/tmp/\(name)"
        let cgroup = "muster-test-\(name)"
        let fm = FileManager.default
        for dir in ["units", "run"] {
            try fm.createDirectory(atPath: "\(base)/\(dir)", withIntermediateDirectories: true)
        }
        let targets = [
            "sysinit", "basic", "shutdown", "local-fs", "local-fs-pre", "swap", "umount", "sockets", "timers", "paths",
            "slices", "network", "network-pre", "network-online", "final", "exit", "poweroff", "halt", "emergency",
        ].map { "\($0).target" }
        let services = [
            "systemd-poweroff.service", "systemd-halt.service", "systemd-exit.service", "dbus.socket", "dbus.service",
            "systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket",
            "systemd-journald-audit.socket",
        ]
        for unit in targets + services {
            try fm.copyItem(atPath: "/lib/systemd/system/\(unit)", toPath: "\(base)/units/\(unit)")
        }
        try
            "[Unit]\nDescription=muster test node\nRequires=basic.target\nWants=dbus.socket systemd-journald.socket\nAfter=basic.target\nAllowIsolate=yes\n"
            .write(toFile: "\(base)/units/node.target", atomically: true, encoding: .utf8)
        try "\(name)\n".write(toFile: "\(base)/hostname", atomically: true, encoding: .utf8)
        let machineID = (0..<32).map { _ in String(random.next() % 16, radix: 16) }.joined()
        try "\(machineID)\n".write(toFile: "\(base)/machine-id", atomically: true, encoding: .utf8)

        // journald inside the node: volatile only (BASE/run/log/journal), never the host's /var/log/journal.
        try fm.createDirectory(atPath: "\(base)/run/systemd/journald.conf.d", withIntermediateDirectories: true)
        try "[Journal]\nStorage=volatile\n".write(
            toFile: "\(base)/run/systemd/journald.conf.d/muster-test.conf", atomically: true, encoding: .utf8)

        let moves = try NodeProcesses.makeCgroup(cgroup)
        // `nsenter --net=`, not `ip netns exec` (which remounts /sys and hides the cgroup tree from systemd).
        let enterNet = netns.map { "nsenter --net=/run/netns/\($0) " } ?? ""
        let helpers = mountHelpers.map { "mount -t overlay overlay -o ro,lowerdir=\($0):/usr/sbin /usr/sbin && " } ?? ""
        let script = """
            \(moves) && exec \(enterNet)unshare --pid --fork --mount --mount-proc --uts --propagation private sh -c '\
            mount --bind \(base)/run /run && mount --bind \(base)/hostname /etc/hostname && \
            mount --bind \(base)/machine-id /etc/machine-id && \(helpers)\
            exec env -i container=muster-test SYSTEMD_UNIT_PATH=\(base)/units /lib/systemd/systemd --system \
            --unit=node.target --log-target=console --log-level=notice'
            """
        let pid = try NodeProcesses.spawn(["/usr/bin/setsid", "/bin/sh", "-c", script], log: "\(base)/console")
        let node = SystemNode(name: name, base: base, pid: pid, cgroup: cgroup, netns: netns)
        do {
            try await node.waitUntilRunning()
        } catch {
            await node.stop()
            throw error
        }
        return node
    }

    /// The node's PID 1 as the host sees it (the only child of the `unshare` process).
    public var initPID: pid_t? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8) else {
            return nil
        }
        return text.split(separator: " ").first.flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// ``initPID``, or an error naming the node when it has none (yet).
    public func requiredInitPID() throws -> pid_t {
        guard let initPID else { throw NodeError("node \(name) has no PID 1 yet") }
        return initPID
    }

    /// `busctl --address=<the node's bus> ARGS…`: status and combined output.
    @discardableResult
    public func busctl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try PostgresHarness.run("/usr/bin/busctl", ["--address=\(busAddressString)"] + arguments)
    }

    /// A property of the manager (`org.freedesktop.systemd1.Manager`), e.g. `SystemState`, as `busctl` prints its
    /// value (`s "running"` → `running`); nil when the bus does not answer.
    public func managerProperty(_ name: String) -> String? {
        guard FileManager.default.fileExists(atPath: busSocketPath),
            let result = try? busctl([
                "get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager", name,
            ]), result.status == 0
        else { return nil }
        return Self.busctlValue(result.output)
    }

    /// `s "running"` → `running`.
    static func busctlValue(_ output: String) -> String {
        var text = output.trimmingCharacters(in: .whitespacesAndNewlines)
        if let space = text.firstIndex(of: " ") { text = String(text[text.index(after: space)...]) }
        if text.hasPrefix("\""), text.hasSuffix("\""), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
        return text
    }

    private func waitUntilRunning() async throws {
        var lastState = "not connected"
        for _ in 0..<500 {
            guard isAlive else { throw NodeError("node \(name) exited while booting; log:\n\(log)") }
            if let state = managerProperty("SystemState") {
                lastState = state
                if state == "running" || state == "degraded" { return }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw NodeError("node \(name) did not boot (state \(lastState)); log:\n\(log)")
    }

    private var isAlive: Bool {
        reaped.withLock { done in
            if done { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { done = true }
            return !done
        }
    }

    /// Powers the node off over D-Bus, waits, then SIGKILLs whatever is left in its cgroups (by PID) and removes
    /// the cgroups and the base directory.
    public func stop() async {
        if isAlive, FileManager.default.fileExists(atPath: busSocketPath) {
            // D-Bus method org.freedesktop.systemd1.Manager.PowerOff: PID 1 of a container exits.
            _ = try? busctl([
                "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                "PowerOff",
            ])
            for _ in 0..<250 where isAlive { try? await Task.sleep(for: .milliseconds(20)) }
        }
        NodeProcesses.killLeftovers(inCgroup: cgroup, rounds: 5)
        for _ in 0..<250 where isAlive { usleep(20_000) }
        NodeProcesses.removeCgroup(cgroup)
        _ = try? FileManager.default.removeItem(atPath: base)
    }
}
