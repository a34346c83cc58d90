import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// `muster seed-cluster` end to end with real parts (issue 6): the real `muster serve` on the test PostgreSQL, the
/// real `muster-agent` on the host driving a real systemd **system** manager (``SystemNode``, PID 1 of its own
/// namespaces) over that node's system bus (`DBUS_SYSTEM_BUS_ADDRESS`), and the example service
/// (`examples/repo-service`) as a real unit of that node, generated in standalone mode (SQLite + local directories).
///
/// The shared volume is a tmpfs mounted on the host before the node boots (so the node's private copy of the mount
/// table has it too): the precheck wants a mount point. Real NFS (nfs-ganesha and the `mount.nfs` stand-in) is
/// covered by the volume tests in AgentTests/Volumes; here the volume only has to be a writable mount.
///
/// After every failure and every rollback the SQLite source and the local directories must be byte-identical and the
/// original config back in place.
@Suite("muster seed-cluster end to end", .serialized, .requiresSystemd)
struct SeedClusterTests {
    /// `examples/repo-service` in this checkout.
    static let exampleDirectory: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("examples/repo-service").path
    }()
    static let python = "/usr/bin/python3"

    /// One standalone server, a coordinator and the agent that joined it, all started for one test.
    struct Fixture {
        let scratch: ScratchDirectory
        /// A network namespace for a second node (``withFixture(netns:_:)`` with `true`); the coordinator then listens
        /// on its bridge address.
        let nodes: NetnsNodes?
        let node: SystemNode
        let coordinator: CoordinatorProcess
        let agent: AgentProcess
        /// Processes a test starts itself (a restarted agent or coordinator, a forwarder): killed by PID at the end.
        let processes: ProcessList
        let nodeID: String
        /// The seed's target database (`seed_<random>`).
        let target: (name: String, url: String)
        let unit: String
        let port: Int
        /// The generator's counts: repositories, commits, snapshots.
        let tables: [String: Int]
        /// The standalone service's `/search?q=Initial%20import` count.
        let searchCount: Int

        var root: String { scratch.path }
        var app: String { "\(root)/srv/app" }
        var database: String { "\(app)/db/repo.db" }
        var configPath: String { "\(root)/etc/config.json" }
        var shared: String { "\(root)/mnt/shared" }
        /// The tmpfs behind the volume (``shared`` is a bind of it on the host and in the first node).
        var volumeSource: String { "\(root)/volume" }
        var serviceLog: String { "\(root)/service.log" }
        func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

        /// Logs for a failure message: the agent's and the coordinator's tails, the service's output.
        func diagnostics() -> String {
            let service = (try? String(contentsOfFile: serviceLog, encoding: .utf8)) ?? "(no service log)"
            return """
                ---- agent (pid \(agent.process.pid)) ----
                \(agent.process.logTail(4000))
                ---- coordinator (pid \(coordinator.process.pid)) ----
                \(coordinator.process.logTail(3000))
                ---- service log ----
                \(String(service.suffix(2000)))
                """
        }

        /// The profile, from `examples/repo-service/seed.yaml` with this fixture's paths, unit, port and target.
        /// - Parameters:
        ///   - expectMode: the `storage_mode` the config must hold before anything changes.
        ///   - serviceURL: the `postgres_url` the service gets in cluster mode (the migration target by default).
        func profile(
            expectMode: String = "sqlite", serviceURL: String? = nil, healthTimeout: Int = 30, unit: String? = nil,
            mountPath: String? = nil, casts: [String] = []
        ) -> String {
            let mountPath = mountPath ?? shared
            let castsLine =
                casts.isEmpty ? "" : "    casts: [\(casts.map { "\"\($0)\"" }.joined(separator: ", "))]"
            let volume = "\(mountPath)/repo-service"
            return """
                service:
                  unit: \(unit ?? self.unit)
                  healthURL: \(url("/health"))
                  healthTimeoutSeconds: \(healthTimeout)
                databases:
                  - path: \(database)
                    target: \(target.url)
                    schema: app
                    tables: [repositories, commits, snapshots]
                \(castsLine)
                directories:
                  - source: \(app)/golden-repos
                    destination: repo-service/golden-repos
                  - source: \(app)/.versioned
                    destination: repo-service/.versioned
                  - source: \(app)/aliases
                    destination: repo-service/aliases
                    exclude: ["*.tmp"]
                rewrites:
                  - files: [\(volume)/aliases/*.json]
                    fields: [/path, /snapshots/*/path]
                    prefixes:
                      - from: \(app)/golden-repos
                        to: \(volume)/golden-repos
                      - from: \(app)/.versioned
                        to: \(volume)/.versioned
                config:
                  file: \(configPath)
                  format: json
                  expect:
                    storage_mode: \(expectMode)
                  set:
                    storage_mode: postgres
                    postgres_url: "\(serviceURL ?? target.url)"
                    postgres_schema: app
                    data_root: \(volume)
                    aliases_dir: \(volume)/aliases
                volume:
                  name: shared
                  mountPath: \(mountPath)
                checks:
                  - name: healthy in cluster mode
                    url: \(url("/health"))
                    json:
                      /status: ok
                      /mode: postgres
                  - name: every row migrated
                    url: \(url("/stats"))
                    json:
                      /mode: postgres
                      /tables/repositories: \(tables["repositories"] ?? -1)
                      /tables/commits: \(tables["commits"] ?? -1)
                      /tables/snapshots: \(tables["snapshots"] ?? -1)
                  - name: every repository and snapshot on the shared volume
                    url: \(url("/repos"))
                    json:
                      /count: \(tables["repositories"] ?? -1)
                      /missing: 0
                  - name: search reads the database
                    url: \(url("/search?q=Initial%20import"))
                    json:
                      /count: \(searchCount)
                """
        }

        /// Writes a profile file and returns its path.
        func writeProfile(_ text: String, name: String) throws -> String {
            let path = "\(root)/\(name).yaml"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        /// The admin CLI against the coordinator (a seed may take a while on a loaded machine).
        func muster(_ args: [String]) async throws -> CommandResult {
            try await runCommand(
                Binaries.muster, args + ["--state-dir", coordinator.stateDir], timeout: .seconds(900))
        }

        /// `muster seed-cluster --node ID --profile P --yes --json [EXTRA]`.
        func seed(_ profilePath: String, _ extra: [String] = []) async throws -> CommandResult {
            try await muster(
                ["seed-cluster", "--node", nodeID, "--profile", profilePath, "--yes", "--json", "--timeout", "10m"]
                    + extra)
        }

        func systemd() async throws -> SystemdManager {
            try await SystemdManager.connect(.bus(node.busAddressString))
        }

        func unitState() async throws -> UnitState {
            try await systemd().state(of: try UnitName(unit))
        }
    }

    // MARK: - Setup

    /// Sets everything up, runs `body`, and always tears down what was started (by PID), in reverse order.
    static func withFixture(netns: Bool = false, _ body: (Fixture) async throws -> Void) async throws {
        var cleanups: [() async -> Void] = []
        func runCleanups() async {
            for cleanup in cleanups.reversed() { await cleanup() }
            cleanups = []
        }
        var fixture: Fixture?
        do {
            try Binaries.check()
            let scratch = try ScratchDirectory("seed")
            cleanups.append { scratch.remove() }
            let root = scratch.path

            // The volume: a tmpfs at ROOT/volume, bind-mounted at ROOT/mnt/shared (the profile's mount path), both
            // before the node boots, so the node's mount namespace (a copy) has them too. A second node booted after
            // the host's bind is gone (``SeedClusterTests/joinSecondNode()``) sees only ROOT/volume and mounts the
            // volume itself.
            let volume = try scratch.sub("volume")
            let shared = try scratch.sub("mnt/shared")
            let mount = try await runCommand(
                "/usr/bin/mount", ["-t", "tmpfs", "-o", "size=256m,mode=755", "tmpfs", volume])
            guard mount.status == 0 else { throw HarnessError("mount tmpfs on \(volume) failed: \(mount.stderr)") }
            cleanups.append {
                if runCommandSync("/usr/bin/umount", [volume]) != 0 {
                    runCommandSync("/usr/bin/umount", ["-l", volume])
                }
            }
            let bind = try await runCommand("/usr/bin/mount", ["--bind", volume, shared])
            guard bind.status == 0 else {
                throw HarnessError("mount --bind \(volume) \(shared) failed: \(bind.stderr)")
            }
            cleanups.append {
                let mounted =
                    (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8))?
                    .contains(" \(shared) ") ?? false
                if mounted, runCommandSync("/usr/bin/umount", [shared]) != 0 {
                    runCommandSync("/usr/bin/umount", ["-l", shared])
                }
            }

            // The standalone installation: generated data, the app, its config.
            let port = try PostgresHarness.freePort()
            let generated = try await runCommand(
                python,
                [
                    "\(exampleDirectory)/generate.py", "--root", "\(root)/srv/app", "--config",
                    "\(root)/etc/config.json",
                    "--listen", "127.0.0.1:\(port)", "--repos", "5", "--commits", "500",
                ], timeout: .seconds(300))
            guard generated.status == 0 else {
                throw HarnessError("generate.py failed (\(generated.status)): \(generated.stdout)\n\(generated.stderr)")
            }
            guard let summary = try JSONSerialization.jsonObject(with: Data(generated.stdout.utf8)) as? [String: Any],
                let counts = summary["tables"] as? [String: Int]
            else { throw HarnessError("generate.py printed no summary with tables: \(generated.stdout)") }
            try FileManager.default.createDirectory(atPath: "\(root)/opt", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "\(exampleDirectory)/app.py", toPath: "\(root)/opt/app.py")

            // The node, and the service as a real unit of it.
            let node = try await SystemNode.start()
            cleanups.append { await node.stop() }
            var random = SystemRandomNumberGenerator()
            let unit = "repo-service-\(String(random.next() % 0xFFFFFF, radix: 16)).service"
            try """
            [Unit]
            Description=repo-service (muster seed-cluster test)

            [Service]
            Type=simple
            ExecStart=\(python) \(root)/opt/app.py --config \(root)/etc/config.json
            Restart=on-failure
            RestartSec=1s
            RestartPreventExitStatus=2
            Environment=PYTHONUNBUFFERED=1
            StandardOutput=append:\(root)/service.log
            StandardError=append:\(root)/service.log
            TimeoutStopSec=15s
            """.write(toFile: "\(node.unitDirectory)/\(unit)", atomically: true, encoding: .utf8)
            let systemd = try await SystemdManager.connect(.bus(node.busAddressString))
            try await systemd.daemonReload()
            _ = try await systemd.start(try UnitName(unit))
            let health = try await eventually("the standalone service to answer /health", timeout: .seconds(60)) {
                () async throws -> [String: Any]? in
                let r = try await http("http://127.0.0.1:\(port)/health")
                return r.status == 200 ? r.object : nil
            }
            guard health["mode"] as? String == "sqlite" else { throw HarnessError("standalone /health: \(health)") }
            let search = try await http("http://127.0.0.1:\(port)/search?q=Initial%20import")
            guard search.status == 200, let searchCount = search.object?["count"] as? Int else {
                throw HarnessError("standalone /search: \(search.status) \(search.body)")
            }

            // A network namespace for a second node, if asked for.
            var nodes: NetnsNodes?
            if netns {
                let up = try NetnsNodes.up(count: 1)
                cleanups.append { up.down() }
                nodes = up
            }

            // Databases: the coordinator's and the seed's target.
            let coordinatorDB = try PostgresHarness.makeDatabase(prefix: "it")
            cleanups.append { PostgresHarness.dropDatabase(coordinatorDB.name) }
            let target = try PostgresHarness.makeDatabase(prefix: "seed")
            cleanups.append { PostgresHarness.dropDatabase(target.name) }

            let coordinator = try await CoordinatorProcess.start(
                stateDir: try scratch.sub("coordinator"), databaseURL: coordinatorDB.url,
                listenHost: nodes?.hostAddress ?? "127.0.0.1")
            cleanups.append { await coordinator.stop() }
            let token = try await coordinator.createToken()
            // The real agent on the host, driving the node's system manager over the node's system bus.
            let agent = try AgentProcess.join(
                name: "agent", netns: nil, coordinator: coordinator.coordinatorAddress, token: token,
                stateDir: try scratch.sub("agent"),
                environment: ["DBUS_SYSTEM_BUS_ADDRESS": node.busAddressString],
                extraArguments: ["--systemd", "system", "--unit-dir", node.unitDirectory])
            cleanups.append { await agent.process.stop() }
            let processes = ProcessList()
            cleanups.append { processes.killAll() }
            let nodeID = try await eventually("the agent to finish its join") { () async throws -> String? in
                if let code = agent.process.exitCode {
                    throw HarnessError("the agent exited with \(code):\n\(agent.process.logTail())")
                }
                return agent.nodeID
            }
            try await coordinator.waitForNode(nodeID, state: "ready")

            fixture = Fixture(
                scratch: scratch, nodes: nodes, node: node, coordinator: coordinator, agent: agent,
                processes: processes,
                nodeID: nodeID, target: target,
                unit: unit, port: port, tables: counts, searchCount: searchCount)
            try await body(fixture!)
        } catch {
            if let fixture { Issue.record("\(error)\n\(fixture.diagnostics())") }
            await runCleanups()
            throw error
        }
        await runCleanups()
    }

    // MARK: - Helpers

    struct HTTPAnswer {
        var status: Int
        var body: String
        var object: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
        }
    }

    /// GET with curl (status 0 when nothing answered).
    static func http(_ url: String) async throws -> HTTPAnswer {
        let r = try await runCommand(
            "/usr/bin/curl", ["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", url], timeout: .seconds(30))
        var lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let status = Int(lines.popLast() ?? "") ?? 0
        return HTTPAnswer(status: status, body: lines.joined(separator: "\n"))
    }

    /// Every regular file under `directory` (relative path → bytes), for byte-identity checks.
    static func tree(_ directory: String) -> [String: Data] {
        var out: [String: Data] = [:]
        for path in FileManager.default.subpaths(atPath: directory) ?? [] {
            let full = "\(directory)/\(path)"
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue
            else { continue }
            out[path] = FileManager.default.contents(atPath: full) ?? Data()
        }
        return out
    }

    /// The differences between two ``tree(_:)`` snapshots, for a message.
    static func differences(_ before: [String: Data], _ after: [String: Data]) -> [String] {
        var out: [String] = []
        for (path, data) in before where after[path] != data {
            out.append(after[path] == nil ? "removed \(path)" : "changed \(path)")
        }
        for path in after.keys where before[path] == nil { out.append("added \(path)") }
        return out.sorted()
    }

    /// The last line of `--json` output that parses as an object with `"event": "summary"`.
    static func summary(_ stdout: String) -> [String: Any]? {
        for line in stdout.split(separator: "\n").reversed() {
            if let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                object["event"] as? String == "summary"
            {
                return object
            }
        }
        return nil
    }

    static func workflowID(_ summary: [String: Any]?) -> String? {
        (summary?["workflow"] as? [String: Any])?["id"] as? String
    }

    static func workflowState(_ summary: [String: Any]?) -> String? {
        (summary?["workflow"] as? [String: Any])?["state"] as? String
    }

    /// The service answers `/health` with 200 in `mode`.
    static func healthy(_ f: Fixture, mode: String) async throws -> [String: Any] {
        try await eventually("\(f.unit) to answer /health in \(mode) mode", timeout: .seconds(60)) {
            () async throws -> [String: Any]? in
            let r = try await http(f.url("/health"))
            guard r.status == 200, let object = r.object, object["mode"] as? String == mode else { return nil }
            return object
        }
    }

    /// What every failure and rollback must leave exactly as it was: the config's bytes, the SQLite files, the
    /// local directories.
    struct Standalone {
        var config: Data
        var sqlite: [String: Data]
        var app: [String: Data]
    }

    static func standalone(_ f: Fixture) throws -> Standalone {
        Standalone(
            config: try #require(FileManager.default.contents(atPath: f.configPath)), sqlite: tree("\(f.app)/db"),
            app: tree(f.app))
    }

    /// `muster workflow rollback ID` exits 0 with the workflow rolled back, and the standalone server is as it was.
    static func rollBackAndExpectStandalone(
        _ f: Fixture, id: String, _ before: Standalone, _ context: String
    ) async throws {
        let rollback = try await f.muster(["workflow", "rollback", id, "--json"])
        #expect(
            rollback.status == 0,
            "rollback exited \(rollback.status)\n\(rollback.stdout.suffix(3000))\n\(rollback.stderr.suffix(2000))\n\(f.diagnostics())"
        )
        #expect(workflowState(summary(rollback.stdout)) == "rolled-back", "\(rollback.stdout.suffix(2000))")
        try await expectStandaloneIntact(f, before, context)
    }

    /// The standalone server is as it was: config bytes, SQLite file, local directories; service active and
    /// answering in SQLite mode.
    static func expectStandaloneIntact(_ f: Fixture, _ before: Standalone, _ context: String) async throws {
        #expect(
            FileManager.default.contents(atPath: f.configPath) == before.config,
            "\(context): the config is not the original: \((try? String(contentsOfFile: f.configPath, encoding: .utf8)) ?? "?")"
        )
        let sqliteDiff = differences(before.sqlite, tree("\(f.app)/db"))
        #expect(sqliteDiff.isEmpty, "\(context): the SQLite source changed: \(sqliteDiff)")
        let appDiff = differences(before.app, tree(f.app))
        #expect(appDiff.isEmpty, "\(context): the local directories changed: \(appDiff.prefix(20))")
        _ = try await healthy(f, mode: "sqlite")
        let state = try await f.unitState()
        #expect(state.activeState == "active", "\(context): \(f.unit) is \(state.activeState)/\(state.subState)")
        let stats = try await http(f.url("/stats"))
        #expect(stats.status == 200 && (stats.object?["tables"] as? [String: Int]) == f.tables, "\(stats.body)")
    }

    // MARK: - Tests

    @Test("seeds a standalone server: every row in PostgreSQL, every repository on the volume; a second run is a no-op")
    func seedsTheStandaloneServer() async throws {
        try await Self.withFixture { f in
            let before = try Self.standalone(f)
            let profile = try f.writeProfile(f.profile(), name: "seed")

            let run = try await f.seed(profile)
            let summary = Self.summary(run.stdout)
            try #require(
                run.status == 0,
                "seed-cluster exited \(run.status)\nstdout:\n\(run.stdout.suffix(6000))\nstderr:\n\(run.stderr.suffix(4000))\n\(f.diagnostics())"
            )
            #expect(summary?["outcome"] as? String == "created", "\(run.stdout.suffix(2000))")
            #expect(Self.workflowState(summary) == "succeeded")
            #expect(
                ((summary?["maintenanceWindowSeconds"] as? NSNumber)?.doubleValue ?? -1) > 0,
                "\(run.stdout.suffix(2000))")
            let id = try #require(Self.workflowID(summary), "no workflow id in \(run.stdout.suffix(2000))")
            // Step events as NDJSON before the summary.
            #expect(run.stdout.contains(#""event":"step""#), "\(run.stdout.prefix(2000))")

            // The service in cluster mode, through its own endpoints.
            _ = try await Self.healthy(f, mode: "postgres")
            let stats = try await Self.http(f.url("/stats"))
            #expect(stats.status == 200, "\(stats.body)")
            #expect(stats.object?["mode"] as? String == "postgres", "\(stats.body)")
            #expect((stats.object?["tables"] as? [String: Int]) == f.tables, "\(stats.body)")
            let repos = try await Self.http(f.url("/repos"))
            #expect(repos.status == 200, "\(repos.body.prefix(2000))")
            #expect(repos.object?["count"] as? Int == f.tables["repositories"], "\(repos.body.prefix(2000))")
            #expect(repos.object?["missing"] as? Int == 0, "\(repos.body.prefix(2000))")
            let search = try await Self.http(f.url("/search?q=Initial%20import"))
            #expect(search.object?["count"] as? Int == f.searchCount, "\(search.body.prefix(2000))")
            // The rows are in the target database, schema app.
            let commits = try PostgresHarness.psql(
                try PostgresHarness.server(), database: f.target.name, sql: "SELECT count(*) FROM app.commits")
            #expect(Int(commits) == f.tables["commits"])

            // The standalone server's data was only read; the config was switched with a backup of the original.
            #expect(Self.differences(before.sqlite, Self.tree("\(f.app)/db")).isEmpty)
            #expect(Self.differences(before.app, Self.tree(f.app)).isEmpty)
            let config = try #require(
                (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: f.configPath))))
                    as? [String: Any])
            #expect(config["storage_mode"] as? String == "postgres")
            #expect(FileManager.default.contents(atPath: f.configPath + ".pre-cluster") == before.config)

            // A second run: already done, nothing runs again.
            let again = try await f.seed(profile)
            #expect(again.status == 0, "\(again.stdout.suffix(2000))\n\(again.stderr.suffix(2000))")
            let againSummary = Self.summary(again.stdout)
            #expect(againSummary?["outcome"] as? String == "already-done", "\(again.stdout.suffix(2000))")
            #expect(Self.workflowID(againSummary) == id)

            let show = try await f.muster(["workflow", "show", id, "--json"])
            #expect(show.status == 0, "\(show.stderr)")
            let shown = (try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any]
            #expect(shown?["state"] as? String == "succeeded", "\(show.stdout.prefix(2000))")
            #expect((shown?["steps"] as? [[String: Any]])?.allSatisfy { $0["state"] as? String == "succeeded" } == true)

            // An operator may undo a finished seed: the standalone service comes back as it was.
            try await Self.rollBackAndExpectStandalone(
                f, id: id, before, "after rolling back a finished seed")
        }
    }

    @Test(
        "each precheck that fails (config not as expected, unit absent, volume not mounted or too small, target not empty) refuses with exit 3 and changes nothing"
    )
    func precheckRefusal() async throws {
        try await Self.withFixture { f in
            let before = try Self.standalone(f)
            let server = try PostgresHarness.server()

            /// Runs a profile that the prechecks must refuse: exit 3, only the precheck ran, its message has `needle`.
            func refused(_ profileText: String, name: String, _ needle: String) async throws {
                let run = try await f.seed(try f.writeProfile(profileText, name: name))
                #expect(
                    run.status == 3,
                    "\(name): seed-cluster exited \(run.status)\nstdout:\n\(run.stdout.suffix(4000))\nstderr:\n\(run.stderr.suffix(3000))\n\(f.diagnostics())"
                )
                let summary = Self.summary(run.stdout)
                #expect(Self.workflowState(summary) == "failed", "\(name)")
                let steps = (summary?["workflow"] as? [String: Any])?["steps"] as? [[String: Any]] ?? []
                #expect(steps.first?["state"] as? String == "failed", "\(name): \(run.stdout.suffix(3000))")
                #expect(
                    steps.dropFirst().allSatisfy { $0["state"] as? String == "pending" },
                    "\(name): \(run.stdout.suffix(3000))")
                let message = ((steps.first?["error"] as? [String: Any])?["message"] as? String) ?? ""
                #expect(message.contains(needle), "\(name): the refusal does not mention '\(needle)': \(message)")
                // The human summary (stderr without --json) is not asked for here; the CLI says what failed.
                #expect(!FileManager.default.fileExists(atPath: f.configPath + ".pre-cluster"), "\(name)")
                #expect(
                    FileManager.default.contents(atPath: f.configPath) == before.config, "\(name): config changed")
                let state = try await f.unitState()
                #expect(state.activeState == "active", "\(name): \(f.unit) is \(state.activeState)")
            }

            // The config does not hold what the profile expects: the failure names the key and both values.
            try await refused(f.profile(expectMode: "nosuch"), name: "expects-nosuch", "nosuch")
            // The unit is not there.
            try await refused(
                f.profile(unit: "repo-service-absent.service"), name: "absent-unit", "repo-service-absent.service")
            // The volume's path is a plain directory, not a mount point.
            let plain = try f.scratch.sub("mnt/plain")
            try await refused(f.profile(mountPath: plain), name: "not-mounted", "not a mount point")
            // The volume is mounted but too small for the directories (+10%).
            let small = try f.scratch.sub("mnt/small")
            let mounted = try await runCommand("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", small])
            try #require(mounted.status == 0, "\(mounted.stderr)")
            do {
                try await refused(f.profile(mountPath: small), name: "small-volume", "not enough space")
            } catch {
                runCommandSync("/usr/bin/umount", [small])
                throw error
            }
            runCommandSync("/usr/bin/umount", [small])
            // The target already holds rows (and no --replace).
            try PostgresHarness.psql(
                server, database: f.target.name,
                sql:
                    "CREATE SCHEMA app; CREATE TABLE app.repositories (id integer); INSERT INTO app.repositories VALUES (1)"
            )
            try await refused(f.profile(), name: "target-not-empty", "repositories")
            try PostgresHarness.psql(server, database: f.target.name, sql: "DROP SCHEMA app CASCADE")

            #expect(
                (try? FileManager.default.contentsOfDirectory(atPath: f.shared)) ?? [] == [], "the volume was written")
            let tables = try PostgresHarness.psql(
                server, database: f.target.name,
                sql: "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'app'")
            #expect(tables == "0", "the target database got tables")
            try await Self.expectStandaloneIntact(
                f, before, "after refused prechecks")
        }
    }

    @Test(
        "the service failing in cluster mode: exit 1, rollback restores standalone byte for byte; resume after fixing it"
    )
    func clusterModeFailureRollbackAndResume() async throws {
        try await Self.withFixture { f in
            let before = try Self.standalone(f)
            // The service gets a PostgreSQL URL where nothing listens: it starts, but /health answers 503.
            let closedPort = try PostgresHarness.freePort()
            let server = try PostgresHarness.server()
            let badURL = "postgres://\(server.user)@127.0.0.1:\(closedPort)/\(f.target.name)?sslmode=disable"
            let profile = try f.writeProfile(f.profile(serviceURL: badURL, healthTimeout: 5), name: "closed-port")

            // (b) fails at "wait until healthy"; the rollback brings the standalone service back.
            let run = try await f.seed(profile)
            #expect(
                run.status == 1,
                "seed-cluster exited \(run.status)\nstdout:\n\(run.stdout.suffix(4000))\nstderr:\n\(run.stderr.suffix(3000))\n\(f.diagnostics())"
            )
            let summary = Self.summary(run.stdout)
            #expect(Self.workflowState(summary) == "failed", "\(run.stdout.suffix(3000))")
            let steps = (summary?["workflow"] as? [String: Any])?["steps"] as? [[String: Any]] ?? []
            let failed = steps.first { $0["state"] as? String == "failed" }
            #expect((failed?["name"] as? String)?.hasPrefix("wait until") == true, "\(run.stdout.suffix(3000))")
            let id = try #require(Self.workflowID(summary), "\(run.stdout.suffix(2000))")
            #expect(
                (summary?["rollbackPlan"] as? [[String: Any]])?.isEmpty == false,
                "no rollback plan printed: \(run.stdout)")
            // The text summary names the failed step and prints the exact rollback command and what it runs.
            let text = try await f.muster(["workflow", "show", id])
            #expect(text.status == 0, "\(text.stderr)")
            #expect(text.stdout.contains("FAILED"), "\(text.stdout)")
            #expect(text.stdout.contains("muster workflow rollback \(id.lowercased())"), "\(text.stdout)")
            #expect(text.stdout.contains("muster workflow resume \(id.lowercased())"), "\(text.stdout)")
            #expect(text.stdout.contains("restore \(f.configPath)"), "\(text.stdout)")

            try await Self.rollBackAndExpectStandalone(
                f, id: id, before, "after the rollback")

            // (c) the same failure again (a new workflow: the last one was rolled back; --replace: the first run
            // left its migrated tables for inspection), then fix the cause — PostgreSQL reachable at that port —
            // and resume from the failed step.
            let again = try await f.seed(profile, ["--replace"])
            #expect(again.status == 1, "\(again.stdout.suffix(3000))\n\(again.stderr.suffix(2000))\n\(f.diagnostics())")
            let againID = try #require(Self.workflowID(Self.summary(again.stdout)), "\(again.stdout.suffix(2000))")
            #expect(againID != id)
            let forwarder = try await Self.startForwarder(f, from: closedPort, to: server.port, host: server.host)
            f.processes.add(forwarder)
            let resumed = try await f.muster(["workflow", "resume", againID, "--json"])
            #expect(
                resumed.status == 0,
                "resume exited \(resumed.status)\n\(resumed.stdout.suffix(4000))\n\(resumed.stderr.suffix(2000))\n\(forwarder.logTail())\n\(f.diagnostics())"
            )
            #expect(Self.workflowState(Self.summary(resumed.stdout)) == "succeeded", "\(resumed.stdout.suffix(2000))")
            let stats = try await Self.http(f.url("/stats"))
            #expect(stats.object?["mode"] as? String == "postgres", "\(stats.body)")
            #expect((stats.object?["tables"] as? [String: Int]) == f.tables, "\(stats.body)")
            #expect(Self.differences(before.sqlite, Self.tree("\(f.app)/db")).isEmpty)
        }
    }

    @Test(
        "bad input: an invalid JSON pointer (exit 2, no workflow), a missing SQLite file (exit 3), an alias file that is not JSON (exit 1 at the rewrite, untouched); each rolled back"
    )
    func badInput() async throws {
        try await Self.withFixture { f in
            var before = try Self.standalone(f)

            // A profile with an invalid JSON pointer: refused before anything is planned.
            let badPointer = f.profile().replacingOccurrences(
                of: "fields: [/path, /snapshots/*/path]", with: "fields: [path, /snapshots/*/path]")
            let pointer = try await f.seed(try f.writeProfile(badPointer, name: "bad-pointer"))
            #expect(pointer.status == 2, "\(pointer.stdout.suffix(2000))\n\(pointer.stderr.suffix(2000))")
            #expect(pointer.stderr.contains("rewrites[0].fields[0]"), "\(pointer.stderr)")
            let listed = try await f.muster(["workflow", "ls", "--json"])
            let workflows = (try? JSONSerialization.jsonObject(with: Data(listed.stdout.utf8))) as? [Any]
            #expect(
                listed.status == 0 && workflows?.isEmpty == true,
                "a workflow was created: \(listed.stdout.prefix(2000))")

            // A profile naming a SQLite file that is not there: the precheck refuses it.
            let missing = f.profile().replacingOccurrences(
                of: "- path: \(f.database)", with: "- path: \(f.app)/db/missing.db")
            let refused = try await f.seed(try f.writeProfile(missing, name: "missing-db"))
            #expect(
                refused.status == 3,
                "seed-cluster exited \(refused.status)\n\(refused.stdout.suffix(3000))\n\(refused.stderr.suffix(2000))\n\(f.diagnostics())"
            )
            let refusedSummary = Self.summary(refused.stdout)
            let refusedSteps = (refusedSummary?["workflow"] as? [String: Any])?["steps"] as? [[String: Any]] ?? []
            let refusal = ((refusedSteps.first?["error"] as? [String: Any])?["message"] as? String) ?? ""
            #expect(refusal.contains("missing.db"), "\(refusal)")
            let refusedID = try #require(Self.workflowID(refusedSummary), "\(refused.stdout.suffix(2000))")
            // Nothing to undo, but the rollback closes the workflow so another profile may run on the node.
            let closed = try await f.muster(["workflow", "rollback", refusedID, "--json"])
            #expect(closed.status == 0, "\(closed.stdout.suffix(2000))\n\(closed.stderr.suffix(2000))")
            #expect(Self.workflowState(Self.summary(closed.stdout)) == "rolled-back", "\(closed.stdout.suffix(2000))")

            // An alias file that is not valid JSON: copied to the volume, then the rewrite refuses it with no file
            // changed; the rollback brings the standalone service back.
            try #"{"path": "\#(f.app)/golden-repos/broken.git", "snapshots": ["#.write(
                toFile: "\(f.app)/aliases/broken.json", atomically: true, encoding: .utf8)
            before.app = Self.tree(f.app)
            let run = try await f.seed(try f.writeProfile(f.profile(), name: "seed"))
            #expect(
                run.status == 1,
                "seed-cluster exited \(run.status)\n\(run.stdout.suffix(3000))\n\(run.stderr.suffix(2000))\n\(f.diagnostics())"
            )
            let summary = Self.summary(run.stdout)
            let steps = (summary?["workflow"] as? [String: Any])?["steps"] as? [[String: Any]] ?? []
            let failed = steps.first { $0["state"] as? String == "failed" }
            #expect(failed?["name"] as? String == "rewrite paths", "\(run.stdout.suffix(3000))")
            let failure = ((failed?["error"] as? [String: Any])?["message"] as? String) ?? ""
            #expect(failure.contains("broken.json"), "\(failure)")
            // The copies on the volume are untouched: byte-identical to the sources, no backups.
            let copies = Self.tree("\(f.shared)/repo-service/aliases")
            let sources = Self.tree("\(f.app)/aliases")
            #expect(!copies.isEmpty && copies == sources, "\(Self.differences(sources, copies))")
            #expect(FileManager.default.contents(atPath: f.configPath) == before.config)
            let id = try #require(Self.workflowID(summary), "\(run.stdout.suffix(2000))")
            try await Self.rollBackAndExpectStandalone(
                f, id: id, before, "after a refused rewrite")
        }
    }

    @Test("the migration failing midway (a value the cast refuses): exit 1, rollback restores standalone byte for byte")
    func migrationFailsMidway() async throws {
        try await Self.withFixture { f in
            // One commit's time is not a timestamp; the profile casts the column to timestamptz. The standalone
            // service does not care (it shows the text), the migration must refuse that row.
            let update = try await runCommand(
                Self.python,
                [
                    "-c",
                    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                        + "c.execute(\"UPDATE commits SET committed_at = 'not a date' WHERE id = (SELECT max(id) FROM commits)\"); "
                        + "c.commit(); c.close()",
                    f.database,
                ])
            try #require(update.status == 0, "\(update.stderr)")
            let before = try Self.standalone(f)
            let profile = try f.writeProfile(
                f.profile(casts: ["commits.committed_at:timestamptz"]), name: "bad-timestamp")

            let run = try await f.seed(profile)
            #expect(
                run.status == 1,
                "seed-cluster exited \(run.status)\nstdout:\n\(run.stdout.suffix(4000))\nstderr:\n\(run.stderr.suffix(3000))\n\(f.diagnostics())"
            )
            let summary = Self.summary(run.stdout)
            let steps = (summary?["workflow"] as? [String: Any])?["steps"] as? [[String: Any]] ?? []
            let failed = steps.first { $0["state"] as? String == "failed" }
            #expect((failed?["name"] as? String)?.hasPrefix("migrate") == true, "\(run.stdout.suffix(3000))")
            let failure = ((failed?["error"] as? [String: Any])?["message"] as? String) ?? ""
            #expect(failure.contains("committed_at"), "\(failure)")
            #expect(FileManager.default.contents(atPath: f.configPath) == before.config)
            let id = try #require(Self.workflowID(summary), "\(run.stdout.suffix(2000))")

            try await Self.rollBackAndExpectStandalone(
                f, id: id, before, "after a failed migration")
        }
    }

    @Test(
        "rsync failing (a destination blocked by a file): exit 1 while the service still runs, sources untouched; resume after unblocking finishes"
    )
    func syncFailureThenResume() async throws {
        try await Self.withFixture { f in
            let before = try Self.standalone(f)
            // The second directory's destination is a regular file: rsync cannot make the directory there.
            let blocked = "\(f.shared)/repo-service/.versioned"
            try FileManager.default.createDirectory(
                atPath: "\(f.shared)/repo-service", withIntermediateDirectories: true)
            try Data("in the way\n".utf8).write(to: URL(fileURLWithPath: blocked))
            let profile = try f.writeProfile(f.profile(), name: "seed")

            let run = try await f.seed(profile)
            #expect(
                run.status == 1,
                "seed-cluster exited \(run.status)\nstdout:\n\(run.stdout.suffix(4000))\nstderr:\n\(run.stderr.suffix(3000))\n\(f.diagnostics())"
            )
            let summary = Self.summary(run.stdout)
            let steps = (summary?["workflow"] as? [String: Any])?["steps"] as? [[String: Any]] ?? []
            let failed = steps.first { $0["state"] as? String == "failed" }
            let failedName = failed?["name"] as? String ?? ""
            #expect(failedName.contains("copy") && failedName.contains(".versioned"), "\(run.stdout.suffix(3000))")
            let id = try #require(Self.workflowID(summary), "\(run.stdout.suffix(2000))")
            // Whichever copy failed, nothing of the standalone server changed; if the window had opened, the
            // service is down now — it must be up when the failure was in the pre-copy.
            #expect(FileManager.default.contents(atPath: f.configPath) == before.config)
            #expect(Self.differences(before.sqlite, Self.tree("\(f.app)/db")).isEmpty)
            #expect(Self.differences(before.app, Self.tree(f.app)).isEmpty)
            if failedName.hasPrefix("pre-copy") {
                let state = try await f.unitState()
                #expect(state.activeState == "active", "\(f.unit) is \(state.activeState) after a failed pre-copy")
            }

            // Fix the cause and resume from the failed step.
            try FileManager.default.removeItem(atPath: blocked)
            let resumed = try await f.muster(["workflow", "resume", id, "--json"])
            #expect(
                resumed.status == 0,
                "resume exited \(resumed.status)\n\(resumed.stdout.suffix(4000))\n\(resumed.stderr.suffix(2000))\n\(f.diagnostics())"
            )
            #expect(Self.workflowState(Self.summary(resumed.stdout)) == "succeeded", "\(resumed.stdout.suffix(2000))")
            let stats = try await Self.http(f.url("/stats"))
            #expect(stats.object?["mode"] as? String == "postgres", "\(stats.body)")
            #expect((stats.object?["tables"] as? [String: Int]) == f.tables, "\(stats.body)")
            let repos = try await Self.http(f.url("/repos"))
            #expect(repos.object?["missing"] as? Int == 0, "\(repos.body.prefix(2000))")
            #expect(Self.differences(before.sqlite, Self.tree("\(f.app)/db")).isEmpty)
        }
    }

    @Test(
        "the coordinator restarted and the agent killed during a step: the workflow goes on and finishes after the cause is fixed"
    )
    func coordinatorRestartAndAgentKill() async throws {
        try await Self.withFixture { f in
            // The service in cluster mode waits for PostgreSQL at a port where nothing listens yet: the health step
            // keeps running (up to 180 s) while the coordinator restarts and the agent is killed and restarted.
            let port = try PostgresHarness.freePort()
            let server = try PostgresHarness.server()
            let url = "postgres://\(server.user)@127.0.0.1:\(port)/\(f.target.name)?sslmode=disable"
            let profile = try f.writeProfile(f.profile(serviceURL: url, healthTimeout: 180), name: "slow-health")
            let cli = try ChildProcess.spawn(
                name: "seed-cluster", path: Binaries.muster,
                arguments: [
                    "seed-cluster", "--node", f.nodeID, "--profile", profile, "--yes", "--json", "--state-dir",
                    f.coordinator.stateDir,
                ], logPath: "\(f.root)/seed-cli.log")
            f.processes.add(cli)

            func workflow() async throws -> [String: Any]? {
                let listed = try await f.muster(["workflow", "ls", "--json"])
                guard listed.status == 0 else { return nil }
                return ((try? JSONSerialization.jsonObject(with: Data(listed.stdout.utf8))) as? [[String: Any]])?.first
            }
            func currentStep(_ workflow: [String: Any]) -> [String: Any]? {
                guard let steps = workflow["steps"] as? [[String: Any]], let index = workflow["currentStep"] as? Int,
                    steps.indices.contains(index)
                else { return nil }
                return steps[index]
            }
            let id = try await eventually("the workflow to reach the health wait", timeout: .seconds(300)) {
                () async throws -> String? in
                if let code = cli.exitCode { throw HarnessError("seed-cluster exited \(code): \(cli.logTail())") }
                guard let w = try await workflow(), let step = currentStep(w) else { return nil }
                let waiting =
                    (step["name"] as? String)?.hasPrefix("wait until") == true
                    && step["state"] as? String == "running"
                return waiting ? w["id"] as? String : nil
            }

            // The coordinator restarts on the same ports and database.
            let agentPort = f.coordinator.agentPort
            await f.coordinator.stop()
            let coordinator = try await CoordinatorProcess.start(
                stateDir: f.coordinator.stateDir, databaseURL: f.coordinator.databaseURL, listenHost: "127.0.0.1",
                agentPort: agentPort)
            f.processes.add(coordinator.process)
            // The agent is killed in the middle of the step and started again.
            f.agent.process.kill(signal: SIGKILL)
            await f.agent.process.waitForExit()
            let agent = try f.agent.restarted()
            f.processes.add(agent.process)
            try await coordinator.waitForNode(f.nodeID, state: "ready")

            let shown = try await f.muster(["workflow", "show", id, "--json"])
            let running = (try? JSONSerialization.jsonObject(with: Data(shown.stdout.utf8))) as? [String: Any]
            #expect(
                running?["state"] as? String == "running",
                "after the restarts: \(shown.stdout.suffix(3000))\n\(f.diagnostics())")

            // Fix the cause: PostgreSQL reachable where the service looks for it.
            let forwarder = try await Self.startForwarder(f, from: port, to: server.port, host: server.host)
            f.processes.add(forwarder)
            let followed = try await f.muster(["workflow", "show", id, "--follow"])
            let shownAgain = try await f.muster(["workflow", "show", id, "--json"])
            let final = (try? JSONSerialization.jsonObject(with: Data(shownAgain.stdout.utf8))) as? [String: Any]
            #expect(
                final?["state"] as? String == "succeeded",
                "\(followed.stdout.suffix(4000))\n\(followed.stderr.suffix(2000))\n\(shownAgain.stdout.suffix(3000))\nCLI: \(cli.logTail(2000))\n\(f.diagnostics())"
            )
            let stats = try await Self.http(f.url("/stats"))
            #expect(stats.object?["mode"] as? String == "postgres", "\(stats.body)")
            #expect((stats.object?["tables"] as? [String: Int]) == f.tables, "\(stats.body)")
            let repos = try await Self.http(f.url("/repos"))
            #expect(repos.object?["missing"] as? Int == 0, "\(repos.body.prefix(2000))")
        }
    }

    @Test(
        "join: a second node in its own network namespace gets the volume through `muster cluster apply`, passes the profile's checks and serves the same data"
    )
    func joinSecondNode() async throws {
        try await Self.withFixture(netns: true) { f in
            let nodes = try #require(f.nodes)
            let netns = nodes.nodes[0].netns
            let seeded = try await f.seed(try f.writeProfile(f.profile(), name: "seed"))
            try #require(
                seeded.status == 0,
                "seed-cluster exited \(seeded.status)\n\(seeded.stdout.suffix(3000))\n\(seeded.stderr.suffix(2000))\n\(f.diagnostics())"
            )
            // The profile's volume, registered as a bind of the tmpfs behind it. The host's own bind goes away first,
            // so the second node (booted next, with a copy of the host's mounts) starts without it and its agent
            // mounts the volume for real through a `.mount` unit (not NFS: the volume tests cover that).
            let unbound = try await runCommand("/usr/bin/umount", [f.shared])
            try #require(unbound.status == 0, "umount \(f.shared): \(unbound.stderr)")
            let created = try await f.muster([
                "volume", "create", "shared", "--bind", f.volumeSource, "--mount-path", f.shared,
            ])
            try #require(created.status == 0, "\(created.stderr)")

            // PostgreSQL for the namespace: a forwarder on the host bridge address.
            let server = try PostgresHarness.server()
            let pgPort = try PostgresHarness.freePort()
            let forwarder = try await Self.startForwarder(
                f, from: pgPort, to: server.port, host: server.host, listen: nodes.hostAddress)
            f.processes.add(forwarder)

            let node2 = try await SystemNode.start(netns: netns)
            // nsenter forks into the node's PID namespace: the agent is its child; both are killed by PID.
            var agents2: [ChildProcess] = []
            func stopSecondNode() async {
                for nsenter in agents2 {
                    let children =
                        (try? String(
                            contentsOfFile: "/proc/\(nsenter.pid)/task/\(nsenter.pid)/children", encoding: .utf8))?
                        .split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
                        ?? []
                    for child in children { kill(child, SIGKILL) }
                    nsenter.killAndReap()
                }
                await node2.stop()
            }
            do {
                // The second node has the service installed (the profile names no module): the cluster-mode config
                // the seed wrote, with PostgreSQL reached through the bridge.
                let seededConfig = try #require(
                    (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: f.configPath))))
                        as? [String: Any])
                var config2 = seededConfig
                config2["postgres_url"] =
                    "postgres://\(server.user)@\(nodes.hostAddress):\(pgPort)/\(f.target.name)?sslmode=disable"
                let config2Path = "\(f.root)/etc/node2.json"
                try JSONSerialization.data(withJSONObject: config2, options: [.prettyPrinted, .sortedKeys]).write(
                    to: URL(fileURLWithPath: config2Path))
                try """
                [Unit]
                Description=repo-service on the second node (muster seed-cluster test)

                [Service]
                Type=simple
                ExecStart=\(Self.python) \(f.root)/opt/app.py --config \(config2Path)
                Restart=on-failure
                RestartSec=1s
                Environment=PYTHONUNBUFFERED=1
                StandardOutput=append:\(f.root)/service2.log
                StandardError=append:\(f.root)/service2.log
                """.write(toFile: "\(node2.unitDirectory)/\(f.unit)", atomically: true, encoding: .utf8)
                let systemd2 = try await SystemdManager.connect(.bus(node2.busAddressString))
                try await systemd2.daemonReload()
                _ = try await systemd2.start(try UnitName(f.unit))

                // The second agent runs inside the node (its mount, PID, UTS and network namespaces), as in production:
                // it checks mounts in its own mount table.
                let token = try await f.coordinator.createToken()
                let agent2State = try f.scratch.sub("agent2")
                let pid1 = try node2.requiredInitPID()
                let agent2 = try ChildProcess.spawn(
                    name: "agent2", path: "/usr/bin/nsenter",
                    arguments: [
                        "-t", "\(pid1)", "-m", "-p", "-u", "-n", Binaries.agent, "join", "--coordinator",
                        f.coordinator.coordinatorAddress, "--token", token, "--state-dir", agent2State, "--run",
                        "--systemd", "system", "--unit-dir", node2.unitDirectory,
                    ], environment: ["MUSTER_LOG_LEVEL": "debug"], logPath: "\(agent2State).log")
                agents2.append(agent2)
                let node2ID = try await eventually("the second agent to finish its join") {
                    () async throws -> String? in
                    if let code = agent2.exitCode {
                        throw HarnessError("agent2 exited with \(code):\n\(agent2.logTail())")
                    }
                    let text = try? String(contentsOfFile: "\(agent2State)/identity/node-id", encoding: .utf8)
                    return text.map { $0.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() }
                        .flatMap { UUID(uuidString: $0) == nil ? nil : $0 }
                }
                try await f.coordinator.waitForNode(node2ID, state: "ready")

                let apply = try await f.muster(["cluster", "apply", "--node", node2ID, "--json", "--timeout", "10m"])
                let service2 = (try? String(contentsOfFile: "\(f.root)/service2.log", encoding: .utf8)) ?? ""
                #expect(
                    apply.status == 0,
                    "cluster apply exited \(apply.status)\n\(apply.stdout.suffix(4000))\n\(apply.stderr.suffix(2000))\nagent2:\n\(agent2.logTail(3000))\nservice2:\n\(service2.suffix(2000))\n\(f.diagnostics())"
                )
                #expect(Self.workflowState(Self.summary(apply.stdout)) == "succeeded", "\(apply.stdout.suffix(2000))")
                #expect(apply.stdout.contains("mount volume shared"), "\(apply.stdout.suffix(3000))")

                // Query the second node's service ourselves, from its namespace.
                func get(_ path: String) async throws -> HTTPAnswer {
                    let r = try await runCommand(
                        "/usr/bin/curl", ["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", f.url(path)],
                        netns: netns, timeout: .seconds(30))
                    var lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
                    let status = Int(lines.popLast() ?? "") ?? 0
                    return HTTPAnswer(status: status, body: lines.joined(separator: "\n"))
                }
                let stats = try await get("/stats")
                #expect(stats.object?["mode"] as? String == "postgres", "\(stats.body)")
                #expect((stats.object?["tables"] as? [String: Int]) == f.tables, "\(stats.body)")
                let repos = try await get("/repos")
                #expect(repos.object?["count"] as? Int == f.tables["repositories"], "\(repos.body.prefix(2000))")
                #expect(repos.object?["missing"] as? Int == 0, "\(repos.body.prefix(2000))")
                // The first node still serves too.
                let first = try await Self.http(f.url("/stats"))
                #expect((first.object?["tables"] as? [String: Int]) == f.tables, "\(first.body)")
            } catch {
                await stopSecondNode()
                throw error
            }
            await stopSecondNode()
        }
    }

    /// A TCP forwarder (Python, standard library) from 127.0.0.1:`from` to `host:to`: makes PostgreSQL reachable
    /// where the profile pointed the service.
    static func startForwarder(
        _ f: Fixture, from: Int, to: Int, host: String, listen: String = "127.0.0.1"
    ) async throws -> ChildProcess {
        let script = """
            import socket, sys, threading
            def pipe(a, b):
                try:
                    while True:
                        data = a.recv(65536)
                        if not data:
                            break
                        b.sendall(data)
                except OSError:
                    pass
                finally:
                    for s in (a, b):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("\(listen)", \(from)))
            server.listen(64)
            print("forwarding", flush=True)
            while True:
                client, _ = server.accept()
                upstream = socket.create_connection(("\(host)", \(to)))
                threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
            """
        let path = "\(f.root)/forward-\(from).py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let forwarder = try ChildProcess.spawn(
            name: "forwarder", path: python, arguments: [path], logPath: "\(f.root)/forward-\(from).log")
        do {
            try await eventually("the forwarder to listen on \(from)") { () async throws -> Bool? in
                if let code = forwarder.exitCode {
                    throw HarnessError("the forwarder exited \(code): \(forwarder.logTail())")
                }
                return forwarder.logTail().contains("forwarding") ? true : nil
            }
        } catch {
            forwarder.killAndReap()
            throw error
        }
        return forwarder
    }
}
