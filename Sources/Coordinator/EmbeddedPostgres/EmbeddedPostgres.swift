import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Shared
import Synchronization

/// The default database: a PostgreSQL server run by `muster serve` as a child process under `<state-dir>/pg`.
///
/// ``start()`` (called before the `ServiceGroup` runs, because everything else needs the database) runs
/// `initdb` on first use, stops a server left over from a coordinator that was killed, starts `postgres` with
/// `listen_addresses=''` (unix socket in `<state-dir>/pg` only), waits until it accepts connections and creates
/// the `muster` database. ``run()`` then supervises the child: an unexpected exit is logged and the server is
/// started again; on graceful shutdown it sends SIGINT (PostgreSQL's "fast" shutdown) and waits for the exit.
///
/// When muster runs as root the server runs as the `postgres` OS user (`initdb` refuses root); the child is
/// started through `setpriv --reuid … --regid … --init-groups`, which execs, so the child's pid is the
/// postmaster's and signals reach it directly (unlike `runuser`, which forks and turns SIGINT into SIGTERM).
public final class EmbeddedPostgres: Service, Sendable {
    /// Where and how the embedded server runs.
    public struct Configuration: Sendable {
        /// `<state-dir>/pg`: holds `data/`, the unix socket and `postgres.log`.
        public var directory: String
        /// Directory with `initdb` and `postgres`; found under `/usr/lib/postgresql/<newest>/bin` when `nil`.
        public var binDirectory: String?
        /// Port number in the socket's name (`.s.PGSQL.<port>`); no TCP port is opened.
        public var port: Int
        /// The database muster uses.
        public var database: String
        /// How long to wait for the server to accept connections.
        public var startTimeout: Duration

        public init(
            directory: String, binDirectory: String? = nil, port: Int = 5432, database: String = "muster",
            startTimeout: Duration = .seconds(60)
        ) {
            self.directory = directory
            self.binDirectory = binDirectory
            self.port = port
            self.database = database
            self.startTimeout = startTimeout
        }

        public var dataDirectory: String { "\(directory)/data" }
        public var socketPath: String { "\(directory)/.s.PGSQL.\(port)" }
        public var logFile: String { "\(directory)/postgres.log" }
    }

    /// The OS account the server runs as.
    struct Account: Sendable, Equatable {
        var name: String
        var uid: uid_t
        var gid: gid_t
    }

    private struct State {
        var process: Process?
        var stopping = false
    }

    public let configuration: Configuration
    let logger: Logger
    private let state = Mutex(State())
    private let exits: AsyncStream<Int32>
    private let exitContinuation: AsyncStream<Int32>.Continuation

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        (exits, exitContinuation) = AsyncStream.makeStream(of: Int32.self)
    }

    /// How the store connects to this server.
    public var databaseConfiguration: Database.Configuration {
        Database.Configuration(
            endpoint: .unixSocket(path: configuration.socketPath), username: "postgres", database: configuration.database)
    }

    // MARK: - Start

    /// Initialises the cluster if needed, starts the server, waits for it and creates the muster database.
    /// - Throws: ``MusterError``: `.io` for a data directory owned by another user or a missing PostgreSQL
    ///   installation, `.databaseUnavailable` when the server does not come up (with the end of its log).
    public func start() async throws {
        let account = try Self.serverAccount()
        let bin = try binDirectory()
        try prepareDirectories(account: account)
        try checkOwnership(account: account)
        if !FileManager.default.fileExists(atPath: "\(configuration.dataDirectory)/PG_VERSION") {
            try initdb(bin: bin, account: account)
        }
        try await stopLeftover()
        try launch(bin: bin, account: account)
        try await waitUntilReady()
        try await createDatabase()
        logger.info(
            "embedded PostgreSQL is ready",
            metadata: ["socket": "\(configuration.socketPath)", "user": "\(account.name)"])
    }

    private func binDirectory() throws -> String {
        if let dir = configuration.binDirectory { return dir }
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        let newest = versions.compactMap(Int.init).sorted().last
        guard let newest, FileManager.default.isExecutableFile(atPath: "\(root)/\(newest)/bin/postgres") else {
            throw MusterError(
                .io, "no PostgreSQL server installation found under \(root)",
                hint: "install it (`apt-get install postgresql`) or point muster at a server with --database-url")
        }
        return "\(root)/\(newest)/bin"
    }

    /// `postgres` when running as root, else the current user.
    static func serverAccount() throws -> Account {
        if getuid() != 0 {
            let name = getpwuid(getuid()).flatMap { String(validatingCString: $0.pointee.pw_name) } ?? "\(getuid())"
            return Account(name: name, uid: getuid(), gid: getgid())
        }
        guard let entry = getpwnam("postgres") else {
            throw MusterError(
                .io, "muster runs as root, so the embedded PostgreSQL must run as the 'postgres' user, which does not exist",
                hint: "install the postgresql package (it creates the user) or use --database-url")
        }
        return Account(name: "postgres", uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
    }

    private func prepareDirectories(account: Account) throws {
        let fm = FileManager.default
        let dir = configuration.directory
        if !fm.fileExists(atPath: dir) {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            guard chmod(dir, 0o700) == 0, chown(dir, account.uid, account.gid) == 0 else {
                throw MusterError(.io, "cannot hand \(dir) to the '\(account.name)' user: \(String(cString: strerror(errno)))")
            }
        }
        // The server user must be able to reach <state-dir>/pg through the state dir.
        if getuid() == 0 {
            let parent = (dir as NSString).deletingLastPathComponent
            if let attrs = try? fm.attributesOfItem(atPath: parent), let mode = attrs[.posixPermissions] as? Int,
                mode & 0o001 == 0
            {
                logger.info("making the state directory traversable for the postgres user", metadata: ["dir": "\(parent)"])
                chmod(parent, mode_t(mode | 0o011))
            }
        }
    }

    /// Refuses a data (or pg) directory owned by someone else than the server account, with what to do.
    func checkOwnership(account: Account) throws {
        for path in [configuration.directory, configuration.dataDirectory] {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                let ownerID = (attributes[.ownerAccountID] as? NSNumber).map({ uid_t($0.uint32Value) })
            else { continue }
            if ownerID != account.uid {
                let owner = getpwuid(ownerID).flatMap { String(validatingCString: $0.pointee.pw_name) }
                    ?? "uid \(ownerID)"
                throw MusterError(
                    .io,
                    "the embedded PostgreSQL directory \(path) is owned by \(owner), but the server runs as \(account.name) (uid \(account.uid))",
                    hint: "chown -R \(account.name) \(configuration.directory), or remove it to start afresh, or use --database-url")
            }
        }
    }

    private func initdb(bin: String, account: Account) throws {
        let data = configuration.dataDirectory
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: data), !entries.isEmpty {
            throw MusterError(
                .io, "\(data) is not empty but holds no PostgreSQL cluster (no PG_VERSION)",
                hint: "remove it (its contents are not a database) or use --database-url")
        }
        logger.info("initialising the embedded PostgreSQL cluster", metadata: ["dir": "\(data)"])
        let (status, output) = try runToCompletion(
            "\(bin)/initdb",
            ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"],
            account: account)
        guard status == 0 else {
            throw MusterError(
                .io, "initdb failed for \(data) (exit \(status)): \(output.suffix(600))",
                hint: "see the message above; remove \(data) to start afresh")
        }
    }

    /// A postmaster left running by a coordinator that was killed holds the data directory: stop it first.
    private func stopLeftover() async throws {
        let pidFile = "\(configuration.dataDirectory)/postmaster.pid"
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let first = text.split(separator: "\n").first, let pid = pid_t(first.trimmingCharacters(in: .whitespaces)),
            pid > 0, kill(pid, 0) == 0, Self.isPostgres(pid: pid)
        else { return }
        logger.warning("stopping an embedded PostgreSQL left over from a previous run", metadata: ["pid": "\(pid)"])
        kill(pid, SIGINT)
        for _ in 0..<300 {
            if kill(pid, 0) != 0 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw MusterError(
            .io, "a PostgreSQL server (pid \(pid)) still holds \(configuration.dataDirectory) and did not stop",
            hint: "stop it (kill -INT \(pid)) and start muster again")
    }

    static func isPostgres(pid: pid_t) -> Bool {
        guard let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return false }
        return comm.hasPrefix("postgres")
    }

    private func launch(bin: String, account: Account) throws {
        let args = [
            "-D", configuration.dataDirectory, "-k", configuration.directory, "-p", "\(configuration.port)",
            "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700",
        ]
        let process = makeProcess("\(bin)/postgres", args, account: account)
        let fm = FileManager.default
        if !fm.fileExists(atPath: configuration.logFile) {
            _ = fm.createFile(atPath: configuration.logFile, contents: nil)
            chown(configuration.logFile, account.uid, account.gid)
        }
        guard let log = FileHandle(forWritingAtPath: configuration.logFile) else {
            throw MusterError(.io, "cannot open \(configuration.logFile) for writing")
        }
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        let continuation = exitContinuation
        process.terminationHandler = { process in continuation.yield(process.terminationStatus) }
        do {
            try process.run()
        } catch {
            throw MusterError(.io, "cannot start \(bin)/postgres: \(error)")
        }
        try? log.close()
        state.withLock { $0.process = process }
        logger.debug("started postgres", metadata: ["pid": "\(process.processIdentifier)"])
    }

    private func waitUntilReady() async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.startTimeout
        var config = PostgresConnection.Configuration(
            unixSocketPath: configuration.socketPath, username: "postgres", password: nil, database: "postgres")
        config.options.connectTimeout = .seconds(2)
        var lastError: (any Error)?
        while clock.now < deadline {
            let running = state.withLock { $0.process?.isRunning ?? false }
            guard running else {
                throw MusterError(
                    .databaseUnavailable, "the embedded PostgreSQL exited during start-up: \(logTail())",
                    hint: "see \(configuration.logFile)")
            }
            if FileManager.default.fileExists(atPath: configuration.socketPath) {
                do {
                    let connection = try await PostgresConnection.connect(
                        configuration: config, id: 0, logger: logger)
                    try await connection.close()
                    return
                } catch {
                    lastError = error
                }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw MusterError(
            .databaseUnavailable,
            "the embedded PostgreSQL did not accept connections within \(configuration.startTimeout): \(logTail())",
            hint: "see \(configuration.logFile)", cause: lastError.map(SendableDescription.init))
    }

    private func createDatabase() async throws {
        let config = PostgresConnection.Configuration(
            unixSocketPath: configuration.socketPath, username: "postgres", password: nil, database: "postgres")
        let connection = try await PostgresConnection.connect(configuration: config, id: 1, logger: logger)
        do {
            let name = configuration.database
            let rows = try await connection.query(
                "SELECT count(*)::bigint FROM pg_database WHERE datname = \(name)", logger: logger)
            var exists = false
            for try await count in rows.decode(Int.self) { exists = count > 0 }
            if !exists {
                let quoted = "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
                try await connection.run(PostgresQuery(unsafeSQL: "CREATE DATABASE \(quoted)"), logger: logger)
            }
            try await connection.close()
        } catch {
            try? await connection.close()
            throw Database.map(error, operation: "create the muster database", redacted: configuration.socketPath)
        }
    }

    // MARK: - Supervise and stop

    /// Supervises the server until graceful shutdown, then stops it with SIGINT and waits for it to exit.
    public func run() async throws {
        try await withGracefulShutdownHandler {
            for await status in exits {
                let stopping = state.withLock { $0.stopping }
                if stopping { return }
                logger.error(
                    "the embedded PostgreSQL exited unexpectedly; starting it again",
                    metadata: ["status": "\(status)", "log": "\(logTail())"])
                try await Task.sleep(for: .seconds(1))
                if state.withLock({ $0.stopping }) { return }
                do {
                    let account = try Self.serverAccount()
                    try launch(bin: try binDirectory(), account: account)
                    try await waitUntilReady()
                } catch {
                    logger.error("cannot restart the embedded PostgreSQL", metadata: ["error": "\(error)"])
                }
            }
        } onGracefulShutdown: {
            self.stop()
        }
    }

    /// Sends SIGINT (fast shutdown: disconnect clients, checkpoint, exit) to the server.
    public func stop() {
        let process: Process? = state.withLock { state in
            state.stopping = true
            return state.process
        }
        guard let process, process.isRunning else {
            exitContinuation.finish()
            return
        }
        logger.info("stopping the embedded PostgreSQL", metadata: ["pid": "\(process.processIdentifier)"])
        kill(process.processIdentifier, SIGINT)
    }

    /// Stops the server and waits for it to exit (for tests and for start-up failures after ``start()``).
    public func stopAndWait(timeout: Duration = .seconds(30)) async {
        stop()
        let process = state.withLock { $0.process }
        guard let process else { return }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while process.isRunning, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if process.isRunning {
            logger.warning("the embedded PostgreSQL did not stop in time; sending SIGQUIT (immediate shutdown)")
            kill(process.processIdentifier, SIGQUIT)
            process.waitUntilExit()
        }
    }

    /// Pid of the running server, if any.
    public var pid: pid_t? {
        state.withLock { state in
            guard let process = state.process, process.isRunning else { return nil }
            return process.processIdentifier
        }
    }

    // MARK: - Helpers

    private func makeProcess(_ tool: String, _ args: [String], account: Account) -> Process {
        let process = Process()
        if getuid() == 0 && account.uid != 0 {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments =
                ["--reuid", "\(account.uid)", "--regid", "\(account.gid)", "--init-groups", "--", tool] + args
        } else {
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = args
        }
        var environment = ProcessInfo.processInfo.environment
        environment["LC_ALL"] = "C.UTF-8"
        environment.removeValue(forKey: "PGDATA")
        process.environment = environment
        // The server's working directory must be readable by its user.
        process.currentDirectoryURL = URL(fileURLWithPath: configuration.directory)
        return process
    }

    private func runToCompletion(_ tool: String, _ args: [String], account: Account) throws -> (Int32, String) {
        let process = makeProcess(tool, args, account: account)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do {
            try process.run()
        } catch {
            throw MusterError(.io, "cannot run \(tool): \(error)")
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    private func logTail() -> String {
        guard let data = FileManager.default.contents(atPath: configuration.logFile) else { return "(no log)" }
        let lines = String(decoding: data.suffix(2000), as: UTF8.self).split(separator: "\n").suffix(5)
        return lines.joined(separator: " | ")
    }
}
