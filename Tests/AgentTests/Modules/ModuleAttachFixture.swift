import Crypto
import Foundation
import Logging
import Shared
import TestSupport

@testable import Agent
@testable import Coordinator

#if canImport(Glibc)
    import Glibc
#endif

/// A module source tree, builds of it with the real ``ModuleBuilder``, and a node store, all under
/// `/var/lib/muster-test-…` (not `/tmp`: services run with `PrivateTmp=yes` and would not see it). Removed by
/// ``remove()``.
struct ModuleAttachFixture {
    static let signer = DescriptorSigner(key: Curve25519.Signing.PrivateKey())

    let base: String
    var source: String { "\(base)/src" }
    var store: NodeModuleStore { NodeModuleStore(root: "\(base)/state/modules") }
    var logs: String { "\(base)/logs" }

    /// `shop`: `api` is `Type=notify` with a 2 s watchdog (a python3 program that pings at half the interval),
    /// `db` a plain shell loop; `/etc/shop/config.toml` is named by no service (shared).
    static let manifest = """
        name: shop
        version: VERSION
        sandbox: strict
        services:
          - name: api
            exec: [/bin/api]
            type: notify
            restart: on-failure
            restartSec: 1s
            watchdogSec: 2s
            env: { GREETING: "hello $USER 100%" }
          - name: db
            exec: [/bin/db, --data, /share/db]
            requires: [api]
            after: [api]
        """

    static let api = """
        #!/usr/bin/python3
        import os, socket, time
        def notify(message):
            address = os.environ["NOTIFY_SOCKET"]
            if address.startswith("@"):
                address = "\\0" + address[1:]
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(address)
                s.sendall(message.encode())
        print("api starting, GREETING=" + os.environ.get("GREETING", ""), flush=True)
        notify("READY=1")
        interval = int(os.environ.get("WATCHDOG_USEC", "1000000")) / 2e6
        while True:
            time.sleep(interval)
            notify("WATCHDOG=1")

        """

    static func db(_ tag: String) -> String {
        "#!/bin/sh\n# \(tag)\necho \"db \(tag) in $MUSTER_MODULE_ROOT\"\nexec /bin/sleep 100000\n"
    }

    init() throws {
        var random = SystemRandomNumberGenerator()
        base = "/var/lib/muster-test-attach-\(getpid())-\(String(random.next() % 0xFFFFFF, radix: 16))"
        try FileManager.default.createDirectory(atPath: "\(base)/logs", withIntermediateDirectories: true)
    }

    /// Writes the source tree for `version` (`db` script tagged `dbTag`) and builds it into `base/out-VERSION`.
    func build(version: String, dbTag: String = "v1", manifest: String = Self.manifest, extra: [String: String] = [:])
        async throws -> ModuleBundle
    {
        let root = "\(source)-\(version)"
        try? FileManager.default.removeItem(atPath: root)
        var files = [
            "/bin/api": (Self.api, 0o755),
            "/bin/db": (Self.db(dbTag), 0o755),
            "/share/db/schema.sql": ("create table t (x int);\n", 0o644),
            "/etc/shop/config.toml": ("port = 8080\n", 0o644),
        ]
        for (path, content) in extra { files[path] = (content, 0o755) }
        for (path, (content, mode)) in files {
            let full = "\(root)/rootfs\(path)"
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try content.write(toFile: full, atomically: false, encoding: .utf8)
            chmod(full, mode_t(mode))
        }
        try manifest.replacingOccurrences(of: "VERSION", with: version).write(
            toFile: "\(root)/module.yaml", atomically: true, encoding: .utf8)
        let output = "\(base)/out-\(version)"
        let result = try await ModuleBuilder(logger: Logger(label: "test")).build(
            moduleDirectory: root, outputDirectory: output, signer: Self.signer)
        return ModuleBundle(directory: result.outputDirectory)
    }

    func attacher(
        node: SystemNode, trustedKeys: [Curve25519.Signing.PublicKey] = [signer.publicKey]
    ) async throws -> ModuleAttacher {
        var configuration = ModuleAttacher.Configuration()
        configuration.managerRoot = "/proc/\(try node.requiredInitPID())/root"
        configuration.output = .files(directory: logs)
        return ModuleAttacher(
            store: store, manager: try await SystemdManager.connect(node.busAddress),
            unitDirectory: node.unitDirectory, trustedKeys: trustedKeys, configuration: configuration,
            logger: Logger(label: "test"))
    }

    func remove() { _ = try? FileManager.default.removeItem(atPath: base) }

    /// Regular files (not temporaries) below `directory`.
    static func files(under directory: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return [] }
        var out: [String] = []
        while let path = enumerator.nextObject() as? String {
            let full = "\(directory)/\(path)"
            if FileStatus.lstat(full)?.kind == .regular { out.append(path) }
        }
        return out.sorted()
    }
}

extension SystemNode {
    /// Mount points in the node's mount namespace below `prefix`.
    func mountPoints(under prefix: String) throws -> [String] {
        let text = try String(contentsOfFile: "/proc/\(try requiredInitPID())/mountinfo", encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = String(fields[4])
            return point.hasPrefix(prefix) ? point : nil
        }.sorted()
    }

    /// `systemd-analyze verify --man=no` of unit files, run in the node's mount namespace (where the module trees
    /// are mounted, so `ExecStart=` paths resolve) and PID namespace (its `/proc` is the node's: without `-p`,
    /// `/proc/self` does not resolve and the executable check fails with EBADF).
    func verifyUnits(_ paths: [String]) throws -> CommandOutput {
        try runCommand(
            "/usr/bin/nsenter",
            ["-t", "\(try requiredInitPID())", "-m", "-p", "/usr/bin/systemd-analyze", "verify", "--man=no"] + paths)
    }
}
