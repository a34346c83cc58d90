import Foundation

/// A real PostgreSQL server for tests.
///
/// If `MUSTER_TEST_DATABASE_URL` is set (scripts/test starts one throwaway cluster and exports it), tests use
/// that server. Otherwise the first caller starts a throwaway cluster (initdb + pg_ctl, as the `postgres` OS
/// user when running as root) that lives until the test process exits.
/// Every test gets its own database from ``PostgresHarness/makeDatabase(prefix:)``.
public enum PostgresHarness {
    public struct Server: Sendable {
        public var host: String
        public var port: Int
        public var user: String
        public var password: String?
        /// Directory holding the unix socket and data dir when we started the cluster ourselves.
        public var ownedDirectory: String?

        /// `postgres://user@host:port/database?sslmode=disable`
        public func url(database: String) -> String {
            let auth = password.map { "\(user):\($0)" } ?? user
            return "postgres://\(auth)@\(host):\(port)/\(database)?sslmode=disable"
        }
    }

    public enum HarnessError: Error, CustomStringConvertible {
        case failed(String)
        public var description: String {
            switch self { case .failed(let s): "PostgresHarness: \(s)" }
        }
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cached: Server?  // guarded by `lock`

    /// The shared server for this test process.
    public static func server() throws -> Server {
        lock.lock()
        defer { lock.unlock() }
        if let cached { return cached }
        let server: Server
        if let url = ProcessInfo.processInfo.environment["MUSTER_TEST_DATABASE_URL"], !url.isEmpty {
            guard let comps = URLComponents(string: url), let host = comps.host else {
                throw HarnessError.failed("MUSTER_TEST_DATABASE_URL is not a URL: \(url)")
            }
            server = Server(
                host: host, port: comps.port ?? 5432, user: comps.user ?? "postgres", password: comps.password,
                ownedDirectory: nil)
        } else {
            server = try startThrowaway()
        }
        cached = server
        return server
    }

    /// Creates a fresh, empty database and returns its name.
    public static func makeDatabase(prefix: String = "t") throws -> (name: String, url: String) {
        let srv = try server()
        let name = "\(prefix)_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12))".lowercased()
        try psql(srv, database: "postgres", sql: "CREATE DATABASE \"\(name)\"")
        return (name, srv.url(database: name))
    }

    /// Drops a database made by ``makeDatabase(prefix:)`` (forcing other sessions out).
    public static func dropDatabase(_ name: String) {
        guard let srv = try? server() else { return }
        _ = try? psql(srv, database: "postgres", sql: "DROP DATABASE IF EXISTS \"\(name)\" WITH (FORCE)")
    }

    /// Runs SQL through `psql` and returns its unaligned, tuples-only output.
    @discardableResult
    public static func psql(_ srv: Server, database: String, sql: String) throws -> String {
        var env = ProcessInfo.processInfo.environment
        if let pw = srv.password { env["PGPASSWORD"] = pw }
        let result = try run(
            "/usr/bin/psql",
            ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", srv.host, "-p", "\(srv.port)", "-U", srv.user,
             "-d", database, "-c", sql],
            environment: env)
        guard result.status == 0 else { throw HarnessError.failed("psql failed: \(result.output)") }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: - Throwaway cluster

    private static let bin = "/usr/lib/postgresql/15/bin"

    private static func startThrowaway() throws -> Server {
        let isRoot = getuid() == 0
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-pgtest-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o755)
        if isRoot { _ = try run("/bin/chown", ["postgres", dir]) }
        let port = try freePort()
        func asPostgres(_ tool: String, _ args: [String]) throws -> (status: Int32, output: String) {
            if isRoot { return try run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(bin)/\(tool)"] + args) }
            return try run("\(bin)/\(tool)", args)
        }
        let initdb = try asPostgres(
            "initdb", ["-D", "\(dir)/data", "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
                       "--no-sync", "--no-instructions"])
        guard initdb.status == 0 else { throw HarnessError.failed("initdb failed: \(initdb.output)") }
        let opts = "-p \(port) -k \(dir) -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            + "-c full_page_writes=off -c max_connections=300"
        let start = try asPostgres("pg_ctl", ["-D", "\(dir)/data", "-l", "\(dir)/server.log", "-w", "-t", "30", "-o", opts, "start"])
        guard start.status == 0 else { throw HarnessError.failed("pg_ctl start failed: \(start.output)") }
        ownedDir = dir
        atexit {
            guard let dir = PostgresHarness.ownedDir else { return }
            let stop = getuid() == 0
                ? ["/usr/sbin/runuser", "-u", "postgres", "--", "\(PostgresHarness.bin)/pg_ctl"]
                : ["\(PostgresHarness.bin)/pg_ctl"]
            _ = try? PostgresHarness.run(stop[0], Array(stop.dropFirst()) + ["-D", "\(dir)/data", "-m", "immediate", "-w", "stop"])
            try? FileManager.default.removeItem(atPath: dir)
        }
        return Server(host: "127.0.0.1", port: port, user: "postgres", password: nil, ownedDirectory: dir)
    }

    nonisolated(unsafe) private static var ownedDir: String?  // written once under `lock`, read at exit

    /// A TCP port that was free a moment ago on 127.0.0.1.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError.failed("socket() failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else { throw HarnessError.failed("bind() failed") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs a program to completion, returning its exit status and combined output.
    ///
    /// Spawned with `posix_spawn` and every descriptor above stderr closed in the child, output to a temporary
    /// file. Foundation's `Process` is not used here: its child inherits the descriptor Foundation watches to
    /// notice the exit, so when the child starts a daemon (`pg_ctl start` → postgres) the daemon keeps it open,
    /// the exit is never noticed and `waitUntilExit()` hangs with a zombie child.
    @discardableResult
    public static func run(_ path: String, _ args: [String], environment: [String: String]? = nil) throws
        -> (status: Int32, output: String)
    {
        let outputPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("muster-harness-\(UUID().uuidString).out").path
        defer { unlink(outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // glibc ≥ 2.34 has it, but the Swift Glibc module does not import it; look it up at run time.
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
            throw HarnessError.failed("posix_spawn_file_actions_addclosefrom_np is missing (glibc < 2.34)")
        }
        _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
        guard rc == 0 else { throw HarnessError.failed("cannot run \(path): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // WIFEXITED / WEXITSTATUS by hand (the macros do not import).
        let exitStatus: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (exitStatus, output)
    }
}
