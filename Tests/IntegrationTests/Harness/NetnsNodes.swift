import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Simulated hosts for integration tests: one network namespace per node, a veth pair into a bridge on the host.
///
/// Ported from the team's `netns-nodes.sh` recipe, with two changes so that several test runs (and
/// `scripts/demo`, which uses 10.77.0.0/24 on its own bridge) can share one machine:
/// - names carry the test process's PID (`mt<pid>_<k>b`, `mt<pid>_<k>-n1`, veth `mt<pid>_<k>v1`), so a later run
///   can remove what a crashed run left behind (``sweepStale()``);
/// - each set takes its own /27 slice of 10.77.0.0/24 (slices 1…7; slice 0 is left to the demo), chosen under a
///   file lock: bridge = first address of the slice, nodes after it. Longest-prefix routing keeps slices apart
///   even while the demo's /24 bridge exists.
/// Only 10.77.0.0/24 is ever used; nothing is forwarded off the machine.
final class NetnsNodes: Sendable {
    struct Node: Sendable {
        /// Network namespace name (`/run/netns/<netns>`).
        var netns: String
        var address: String
    }

    let bridge: String
    /// The bridge's address on the host: the coordinator listens here.
    let hostAddress: String
    let nodes: [Node]
    private let vethNames: [String]
    private let torndown = Mutex(false)

    private init(bridge: String, hostAddress: String, nodes: [Node], vethNames: [String]) {
        self.bridge = bridge
        self.hostAddress = hostAddress
        self.nodes = nodes
        self.vethNames = vethNames
    }

    static let ipTool = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"
    private static let lockPath = "/run/muster-test-netns.lock"
    private static let counter = Mutex(0)

    /// Creates the bridge and `count` namespaces (at most 29).
    static func up(count: Int) throws -> NetnsNodes {
        precondition(count >= 1 && count <= 29, "a /27 slice holds at most 29 nodes")
        let fd = open(lockPath, O_RDWR | O_CREAT, 0o644)
        guard fd >= 0 else { throw HarnessError("cannot open \(lockPath): \(String(cString: strerror(errno)))") }
        defer { close(fd) }  // releases the flock
        guard flock(fd, LOCK_EX) == 0 else { throw HarnessError("flock \(lockPath) failed") }

        sweepStale()
        let slice = try freeSlice()
        let k = counter.withLock { value in
            defer { value += 1 }
            return value % 36
        }
        let tag = "mt\(getpid())_\(String(k, radix: 36))"
        let bridge = "\(tag)b"
        let base = slice * 32
        let hostAddress = "10.77.0.\(base + 1)"
        var nodes: [Node] = []
        var veths: [String] = []
        do {
            try ip(["link", "add", bridge, "type", "bridge"])
            try ip(["addr", "add", "\(hostAddress)/27", "dev", bridge])
            try ip(["link", "set", bridge, "up"])
            for i in 1...count {
                let ns = "\(tag)-n\(i)"
                let veth = "\(tag)v\(i)"
                precondition(veth.utf8.count <= 15, "interface name too long: \(veth)")
                try ip(["netns", "add", ns])
                nodes.append(Node(netns: ns, address: "10.77.0.\(base + 1 + i)"))
                try ip(["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
                veths.append(veth)
                try ip(["link", "set", veth, "master", bridge, "up"])
                try ip(["-n", ns, "addr", "add", "\(nodes[i - 1].address)/27", "dev", "eth0"])
                try ip(["-n", ns, "link", "set", "eth0", "up"])
                try ip(["-n", ns, "link", "set", "lo", "up"])
            }
        } catch {
            NetnsNodes(bridge: bridge, hostAddress: hostAddress, nodes: nodes, vethNames: veths).down()
            throw error
        }
        return NetnsNodes(bridge: bridge, hostAddress: hostAddress, nodes: nodes, vethNames: veths)
    }

    /// Kills processes left inside the namespaces (by PID), deletes veths, namespaces and the bridge. Idempotent,
    /// synchronous so it can run from `defer`.
    func down() {
        let already = torndown.withLock { done in
            defer { done = true }
            return done
        }
        guard !already else { return }
        for node in nodes { Self.killProcesses(inNetns: node.netns) }
        for veth in vethNames { runCommandSync(Self.ipTool, ["link", "del", veth]) }
        for node in nodes { runCommandSync(Self.ipTool, ["netns", "del", node.netns]) }
        runCommandSync(Self.ipTool, ["link", "del", bridge])
    }

    // MARK: - Helpers

    private static func ip(_ args: [String]) throws {
        let rc = runCommandSync(ipTool, args)
        guard rc == 0 else { throw HarnessError("ip \(args.joined(separator: " ")) failed (exit \(rc))") }
    }

    /// PIDs in a namespace, as `ip netns pids` reports them; each is killed by PID.
    private static func killProcesses(inNetns ns: String) {
        let nsPath = "/run/netns/\(ns)"
        var nsStat = stat()
        guard stat(nsPath, &nsStat) == 0 else { return }
        let target = UInt64(nsStat.st_ino)
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        for entry in entries {
            guard let pid = pid_t(entry) else { continue }
            var st = stat()
            guard stat("/proc/\(pid)/ns/net", &st) == 0, UInt64(st.st_ino) == target else { continue }
            _ = Glibc.kill(pid, SIGKILL)
        }
    }

    /// The first /27 slice (1…7) of 10.77.0.0/24 with no address on any host interface.
    private static func freeSlice() throws -> Int {
        var used = Set<Int>()
        var ifap: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&ifap) == 0, let first = ifap else { throw HarnessError("getifaddrs failed") }
        defer { freeifaddrs(ifap) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            let addr = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                UInt32(bigEndian: $0.pointee.sin_addr.s_addr)
            }
            if addr >> 8 == (10 << 16 | 77 << 8 | 0) { used.insert(Int(addr & 0xff) / 32) }
        }
        guard let slice = (1...7).first(where: { !used.contains($0) }) else {
            throw HarnessError("no free /27 slice of 10.77.0.0/24 (all 7 in use by other test runs)")
        }
        return slice
    }

    /// Removes namespaces, veths and bridges named `mt<pid>_…` whose test process no longer runs.
    static func sweepStale() {
        func ownerIsDead(_ name: String) -> Bool {
            guard name.hasPrefix("mt"), let sep = name.firstIndex(of: "_"),
                let pid = pid_t(name[name.index(name.startIndex, offsetBy: 2)..<sep])
            else { return false }
            return Glibc.kill(pid, 0) != 0 && errno == ESRCH
        }
        let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        for ns in namespaces where ownerIsDead(ns) {
            killProcesses(inNetns: ns)
            runCommandSync(ipTool, ["netns", "del", ns])
        }
        let links = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []
        for link in links where ownerIsDead(link) {
            runCommandSync(ipTool, ["link", "del", link])
        }
    }
}

/// Runs `body` with `count` simulated hosts and tears them down afterwards, also when `body` throws.
func withNetnsNodes<T>(count: Int, _ body: (NetnsNodes) async throws -> T) async throws -> T {
    let set = try NetnsNodes.up(count: count)
    defer { set.down() }
    return try await body(set)
}
