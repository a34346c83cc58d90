import Foundation
import Logging
import NIOCore
import NIOPosix
import Shared
import Subprocess
import SystemPackage

#if canImport(CoreFoundation)
    // With MemberImportVisibility, members of glibc structs (stat, dirent, sockaddr, passwd, statvfs) may resolve to
    // CoreFoundation's copy of the headers depending on build order, so that module is imported explicitly.
    import CoreFoundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// A short-lived rsync daemon that serves one directory read-only to one puller (node → node sync, DESIGN §6).
///
/// It binds to the node's cluster address only, exports one read-only module, and admits one user (`muster`) with
/// a per-task secret kept in a 0600 secrets file inside a 0700 directory of the agent's state directory. It stops
/// once one pull is over (two admitted connections, precheck and copy, and no connection left) or after
/// ``Serve/maxSeconds``, and the directory with the secret is removed in every case.
struct RsyncDaemon: Sendable {
    /// The `serve` part of a `syncTree` spec.
    struct Serve: Codable, Sendable, Equatable {
        var path: String
        var address: String
        var port: Int
        var module: String
        var secret: String
        var maxSeconds: Int?
    }

    struct Report: Codable, Sendable, Equatable {
        var address: String
        var port: Int
        var module: String
        /// A client completed a transfer (else the daemon stopped at the time limit).
        var transferred: Bool
        var servedSeconds: Double
    }

    var executable = "rsync"
    let stateDirectory: String
    let logger: Logger

    /// Serves until the first transfer completes or the time limit; `onListening` once the port accepts.
    /// - Throws: ``MusterError`` `.invalidInput` for a bad spec, `.io` when the daemon does not come up.
    func serve(_ spec: Serve, onListening: @escaping @Sendable () async -> Void) async throws -> Report {
        try SyncSpec(source: spec.path, destination: "/nonexistent-muster-serve-destination").validate()
        guard FileStatus.lstat(spec.path)?.kind == .directory else {
            throw MusterError(.invalidInput, "the source '\(spec.path)' is not a directory")
        }
        guard (1...65535).contains(spec.port),
            spec.module.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }),
            !spec.module.isEmpty, spec.secret.count >= 16,
            spec.secret.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }),
            !spec.address.isEmpty, !spec.address.contains(where: { $0 == " " || $0 == "\n" })
        else {
            throw MusterError(
                .invalidInput, "the serve spec needs a port, a module from [a-z0-9-] and a secret of ≥ 16 characters")
        }
        let directory = try Self.privateDirectory(under: stateDirectory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.writePrivate("muster:\(spec.secret)\n", to: "\(directory)/secrets")
        // uid/gid 0: read the tree as the agent does (a root daemon would otherwise drop to nobody); the module is
        // read-only, so the puller can never change the source.
        let config = """
            use chroot = no
            max connections = 1
            [\(spec.module)]
                path = \(spec.path)
                comment = muster sync task
                read only = yes
                write only = no
                list = no
                uid = 0
                gid = 0
                numeric ids = yes
                auth users = muster
                secrets file = \(directory)/secrets
                strict modes = yes
                refuse options = delete remove-source-files

            """
        try Self.writePrivate(config, to: "\(directory)/rsyncd.conf")
        let log = "\(directory)/rsyncd.log"
        let limit = Duration.seconds(spec.maxSeconds ?? 3600)
        let clock = ContinuousClock()
        let started = clock.now
        var options = PlatformOptions()
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(3))]
        logger.info(
            "serving for a sync",
            metadata: ["address": "\(spec.address)", "port": "\(spec.port)", "path": "\(spec.path)"])
        let result = try await Subprocess.run(
            .path(FilePath(Rsync.resolve(executable))),
            arguments: [
                "--daemon", "--no-detach", "--config=\(directory)/rsyncd.conf", "--address=\(spec.address)",
                "--port=\(spec.port)", "--log-file=\(log)",
            ], platformOptions: options, input: .none, output: .discarded, error: .discarded
        ) { execution -> Bool in
            var listening = false
            while clock.now - started < .seconds(30) {
                if await Self.accepts(host: spec.address, port: spec.port) {
                    listening = true
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            guard listening else {
                await execution.teardown(using: [])
                throw MusterError(
                    .io, "the rsync daemon did not listen on \(spec.address):\(spec.port)",
                    hint: "is the port free and the address this node's?")
            }
            await onListening()
            var transferred = false
            let daemonPID = execution.processIdentifier.value
            while clock.now - started < limit {
                // The pull makes exactly two authenticated connections (the dry-run precheck, then the copy); the
                // daemon logs each as "rsync allowed access on module …" and serves it in a child process. Two
                // admissions and no child left: the copy is over.
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                let admitted = text.components(separatedBy: "rsync allowed access on module").count - 1
                if admitted >= Self.connectionsPerPull, Self.children(of: daemonPID).isEmpty {
                    transferred = true
                    break
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            await execution.teardown(using: [.gracefulShutDown(allowedDurationToNextStep: .seconds(3))])
            return transferred
        }
        return Report(
            address: spec.address, port: spec.port, module: spec.module, transferred: result.closureResult,
            servedSeconds: SyncEngine.seconds(clock.now - started))
    }

    /// Connections one pull makes (``SyncEngine/pull(_:secret:stateDirectory:connectWithin:onEvent:)``).
    static let connectionsPerPull = 2

    /// Child processes of `pid` (the daemon forks one per connection).
    static func children(of pid: pid_t) -> [pid_t] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Whether `host:port` accepts a TCP connection within a second.
    static func accepts(host: String, port: Int) async -> Bool {
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(1)).connect(host: host, port: port).get()
            try? await channel.close()
            return true
        } catch {
            return false
        }
    }

    /// A new 0700 directory under `<state>/rsync`.
    static func privateDirectory(under stateDirectory: String) throws -> String {
        let parent = "\(stateDirectory)/rsync"
        try FileManager.default.createDirectory(
            atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var template = Array("\(parent)/task-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw MusterError(
                .io, "cannot create a private directory under \(parent): \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }

    /// Writes `text` to a new file with mode 0600 (created with that mode, never widened).
    static func writePrivate(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw MusterError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw MusterError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
