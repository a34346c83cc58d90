import Foundation
import Synchronization
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A real user-space NFS server (nfs-ganesha, FSAL VFS, NFSv3 + v4, `Graceless = true`) with rpcbind, alone in
/// a network namespace of its own and reachable there at 127.0.0.1. A port of the team's `nfs-server.sh` recipe.
///
/// The kernel of these machines has no NFS client, so a node that mounts from this server uses the
/// ``mountHelper`` stand-in (TESTING.md): the helper proves the export is served over real NFS RPC (`nfs-ls`, libnfs)
/// and then bind-mounts the export's backing directory. Tests using it carry `NFSStub` in their names.
final class NFSServer: Sendable {
    let netns: String
    let base: String
    /// The exported directory (pseudo path ``pseudoPath``).
    var exportDirectory: String { "\(base)/export" }
    let pseudoPath = "/export"
    /// The directory to pass as ``SystemNode/start(netns:mountHelpers:)``'s `mountHelpers`.
    var helperDirectory: String { "\(base)/helpers" }
    var helperLog: String { "\(base)/mount.nfs-stub.log" }
    private let superPID = Mutex<pid_t?>(nil)

    static var isAvailable: Bool {
        ["/usr/bin/ganesha.nfsd", "/usr/sbin/ganesha.nfsd"].contains {
            FileManager.default.isExecutableFile(atPath: $0)
        }
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/nfs-ls")
    }

    private init(netns: String, base: String) {
        self.netns = netns
        self.base = base
    }

    /// Creates the namespace (loopback up), the export with the helpers, and starts the server.
    static func start() async throws -> NFSServer {
        var random = SystemRandomNumberGenerator()
        let id = "mn\(getpid())-\(String(random.next() % 0xFFFFFF, radix: 16))"
        let server = NFSServer(netns: id, base: "/tmp/\(id)")
        let fm = FileManager.default
        for dir in ["export", "helpers", "run"] {
            try fm.createDirectory(atPath: "\(server.base)/\(dir)", withIntermediateDirectories: true)
        }
        try check(runCommand(NFSServer.ip, ["netns", "add", id]), "ip netns add")
        do {
            try check(runCommand(NFSServer.ip, ["-n", id, "link", "set", "lo", "up"]), "ip link set lo up")
            try server.writeFiles()
            try await server.startServer()
        } catch {
            await server.teardown()
            throw error
        }
        return server
    }

    static let ip = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"

    private func writeFiles() throws {
        let config = """
            NFS_CORE_PARAM { Protocols = 3, 4; }
            NFSV4 { Graceless = true; RecoveryBackend = fs; }
            NFS_KRB5 { Active_krb5 = false; }
            EXPORT {
              Export_Id = 1; Path = \(exportDirectory); Pseudo = \(pseudoPath);
              Access_Type = RW; Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys;
              FSAL { Name = VFS; }
            }

            """
        try config.write(toFile: "\(base)/ganesha.conf", atomically: true, encoding: .utf8)
        // The mount.nfs stand-in (TESTING.md, recipes/mount.nfs-stub), with this server's mapping written in:
        // mount(8) runs helpers with a clean environment, so NFS_STUB_MAP cannot be passed.
        let stub = """
            #!/bin/sh
            # Stand-in for mount.nfs/mount.nfs4 in a test node (this kernel has no NFS client): checks the export
            # over real NFS (libnfs), then bind-mounts the export's backing directory.
            spec=$1; dir=$2
            server=${spec%%:*}; path=${spec#*:}
            case $0 in *nfs4) version=4;; *) version=3;; esac
            echo "mount.nfs-stub: $spec -> $dir ($*)" >> \(helperLog)
            nfs-ls "nfs://$server$path?version=$version" >/dev/null 2>>\(helperLog) || { echo "mount.nfs: $spec: export not reachable (server down?)" >&2; exit 32; }
            case $path in \(pseudoPath)*) local_dir=\(exportDirectory)${path#\(pseudoPath)};; *) echo "mount.nfs: no mapping for $path" >&2; exit 32;; esac
            exec mount --bind "$local_dir" "$dir"

            """
        for name in ["mount.nfs", "mount.nfs4"] {
            let path = "\(helperDirectory)/\(name)"
            try stub.write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o755)
        }
    }

    /// Starts rpcbind and ganesha inside the namespace (private /run); returns when port 2049 answers there.
    func startServer() async throws {
        let ganesha =
            FileManager.default.isExecutableFile(atPath: "/usr/bin/ganesha.nfsd")
            ? "/usr/bin/ganesha.nfsd" : "/usr/sbin/ganesha.nfsd"
        let script = """
            exec nsenter --net=/run/netns/\(netns) unshare -m --propagation private sh -c '
              mount -t tmpfs tmpfs /run && mkdir -p /run/rpcbind
              rpcbind -f -w & echo $! > \(base)/run/rpcbind.pid
              for i in $(seq 100); do [ -S /run/rpcbind.sock ] && break; sleep 0.05; done
              exec \(ganesha) -F -f \(base)/ganesha.conf -L \(base)/run/ganesha.log -p \(base)/run/ganesha.pid -N NIV_EVENT'
            """
        let pid = try UserManager.spawn(["/usr/bin/setsid", "/bin/sh", "-c", script], log: "\(base)/run/stdout")
        superPID.withLock { $0 = pid }
        for _ in 0..<200 {
            if let out = try? runCommand("/usr/bin/nsenter", ["--net=/run/netns/\(netns)", "ss", "-ltn"]),
                out.stdout.contains(":2049 ")
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let log = (try? String(contentsOfFile: "\(base)/run/ganesha.log", encoding: .utf8)) ?? ""
        throw UserManagerError("nfs-ganesha did not listen on 2049; log:\n\(log.suffix(2000))")
    }

    /// Stops ganesha and rpcbind (by PID), keeping the namespace: "the server is lost".
    func stopServer() async {
        let pids = [superPID.withLock { $0 }, Self.readPID("\(base)/run/rpcbind.pid")].compactMap { $0 }
        for p in pids { kill(p, SIGTERM) }
        for _ in 0..<50 {
            if pids.allSatisfy({ kill($0, 0) != 0 || Self.reap($0) }) { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        for p in pids where kill(p, 0) == 0 { kill(p, SIGKILL) }
        for p in pids { _ = Self.reap(p) }
        superPID.withLock { $0 = nil }
    }

    /// Stops the server, kills whatever else still runs in the namespace (by PID), deletes it and the files.
    func teardown() async {
        await stopServer()
        if let out = try? runCommand(Self.ip, ["netns", "pids", netns]) {
            for p in out.stdout.split(separator: "\n").compactMap({ pid_t($0) }) { kill(p, SIGKILL) }
        }
        _ = try? runCommand(Self.ip, ["netns", "del", netns])
        _ = try? FileManager.default.removeItem(atPath: base)
    }

    private static func readPID(_ path: String) -> pid_t? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
            pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// Reaps `pid` if it is our exited child; `true` when it is gone.
    private static func reap(_ pid: pid_t) -> Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == pid
    }

    private static func check(_ output: CommandOutput, _ what: String) throws {
        guard output.status == 0 else { throw UserManagerError("\(what) failed: \(output.stderr)") }
    }
}
