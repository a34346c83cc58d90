import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// A PostgreSQL cluster of the test's own, so it can be restarted without disturbing other tests.
final class DedicatedCluster: Sendable {
    let directory: String
    let port: Int
    private let bin = "/usr/lib/postgresql/15/bin"
    private let isRoot = getuid() == 0

    init() throws {
        directory = NSTemporaryDirectory() + "muster-migpg-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        if isRoot { try PostgresHarness.run("/bin/chown", ["postgres", directory]) }
        port = try PostgresHarness.freePort()
        let initdb = try pg(
            "initdb", ["-D", "\(directory)/data", "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
                       "--no-sync", "--no-instructions"])
        guard initdb.status == 0 else { throw FixtureError("initdb: \(initdb.output)") }
        try start()
    }

    var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres?sslmode=disable" }

    func start() throws {
        let opts = "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off"
        let r = try pg("pg_ctl", ["-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-t", "30", "-o", opts, "start"])
        guard r.status == 0 else { throw FixtureError("pg_ctl start: \(r.output)") }
    }

    /// Fast restart: every client connection is terminated.
    func restart() throws {
        let r = try pg("pg_ctl", ["-D", "\(directory)/data", "-m", "fast", "-w", "-t", "30", "restart"])
        guard r.status == 0 else { throw FixtureError("pg_ctl restart: \(r.output)") }
    }

    func stop() {
        _ = try? pg("pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    func query(_ sql: String) async throws -> String {
        let port = port
        let r = try await offPool {
            try PostgresHarness.run(
            "/usr/bin/psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "\(port)", "-U",
                              "postgres", "-d", "postgres", "-c", sql])
        }
        guard r.status == 0 else { throw FixtureError("psql: \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs a PostgreSQL tool with posix_spawn + waitpid and its output in a file. (Foundation's `Process` was
    /// seen to never reap `runuser` after `pg_ctl start` left a daemon behind, hanging the test.)
    @discardableResult
    private func pg(_ tool: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let outPath = directory + "/\(tool)-\(UUID().uuidString.prefix(6)).out"
        let argv = (isRoot ? ["/usr/sbin/runuser", "-u", "postgres", "--", "\(bin)/\(tool)"] : ["\(bin)/\(tool)"]) + args
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o666)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, &cargs, environ)
        guard rc == 0 else { throw FixtureError("posix_spawn \(argv[0]) failed: \(rc)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let output = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let exited = status & 0x7F == 0
        return (exited ? (status >> 8) & 0xFF : 128 + (status & 0x7F), output)
    }
}

extension MigrationTests {
    @Suite("PostgreSQL restart")
    struct MigrationRestartTests {
        @Test func restartInTheMiddleFailsCleanlyAndReRunCompletes() async throws {
            let src = try SQLiteFixture()
            try src.exec(
                """
                CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT);
                INSERT INTO small VALUES (1, 'a');
                CREATE TABLE big (id INTEGER PRIMARY KEY, s TEXT NOT NULL);
                WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000000)
                  INSERT INTO big SELECT i, printf('%.80d', i) FROM c;
                """)
            let before = try src.sha256()
            let cluster = try DedicatedCluster()
            defer { cluster.stop() }
            let spec = MigrationSpec(databases: [src.path], target: cluster.url, jobs: 1)

            let (started, signal) = AsyncStream.makeStream(of: Void.self)
            let run = Task {
                try await MigrationEngine(spec: spec).run { p in
                    if p.table == "big", p.rowsDone > 0 { signal.yield() }
                }
            }
            var iterator = started.makeAsyncIterator()
            _ = await iterator.next()
            try await offPool { try cluster.restart() }
            let error = await #expect(throws: MusterError.self) { try await run.value }
            #expect(error?.code == .databaseUnavailable)
            #expect(error?.code.exitCode == 2)
            #expect(error?.hint?.contains("again") == true)
            #expect(try src.sha256() == before)
            // Nothing half-copied is visible: the copy runs in one transaction.
            #expect(try await cluster.query("SELECT count(*) FROM big") == "0")

            let report = try await MigrationEngine(spec: spec).run()
            #expect(report.exitCode == 0, "\(report.renderTable())")
            #expect(report.tables.first { $0.table == "big" }?.action == .reload)
            #expect(report.tables.allSatisfy { $0.verified == true || $0.action == .skip })
            #expect(try await cluster.query("SELECT count(*) FROM big") == "1000000")
            #expect(try src.sha256() == before)
        }
    }
}
