import Foundation
import NIOCore
import NIOPosix
import Shared
import Synchronization

#if canImport(CoreFoundation)
    // With MemberImportVisibility, members of glibc structs (stat, dirent, sockaddr, passwd, statvfs) may resolve to
    // CoreFoundation's copy of the headers depending on build order, so that module is imported explicitly.
    import CoreFoundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// Checks one mounted volume: in the mount table, writable (a probe file created, written, `fsync`ed and removed),
/// free space (`statvfs`).
///
/// A hard NFS mount whose server is gone blocks every write for ever, so for NFS volumes the server's NFS port is
/// tried first (TCP connect with ``timeout``): when it does not answer, the volume is reported not writable without
/// touching it. The write probe itself runs on its own thread and is abandoned after ``timeout``.
struct VolumeProbe: Sendable {
    /// Prefix for file-system paths: `""` in production; tests use `/proc/PID/root` to look into a node's mount
    /// namespace.
    var rootPrefix: String = ""
    var mountInfoPath: String = "/proc/self/mountinfo"
    var timeout: Duration = .seconds(5)
    var nfsPort: Int = 2049

    /// The status of a volume whose unit is in `unitState`.
    func status(name: String, mountPath: String, type: VolumeType, what: String, unitState: String?) async
        -> VolumeStatus
    {
        var status = VolumeStatus(
            name: name, mountPath: mountPath, unitState: unitState, mounted: false, writable: false, totalBytes: nil,
            freeBytes: nil, problem: nil)
        let table: MountTable
        do {
            table = try MountTable.read(path: mountInfoPath)
        } catch {
            status.problem = "cannot read the mount table \(mountInfoPath): \(error)"
            return status
        }
        guard table.mount(at: mountPath) != nil else {
            status.problem =
                "not mounted (no entry for \(mountPath) in the mount table; unit \(unitState ?? "unknown"))"
            return status
        }
        status.mounted = true
        if type.isNetwork, let server = Self.server(of: what) {
            if let unreachable = await reach(server) {
                status.problem = "NFS server \(server) unreachable (\(unreachable)); not probing the mount"
                return status
            }
        }
        let local = rootPrefix + mountPath
        if let space = Self.space(at: local) {
            status.totalBytes = space.total
            status.freeBytes = space.free
        }
        switch await writeProbe(directory: local) {
        case nil: status.writable = true
        case let problem?: status.problem = problem
        }
        return status
    }

    /// `SERVER` of `SERVER:/EXPORT` (`[v6]:/export` too).
    static func server(of what: String) -> String? {
        if what.hasPrefix("["), let end = what.firstIndex(of: "]") {
            return String(what[what.index(after: what.startIndex)..<end])
        }
        guard let colon = what.firstIndex(of: ":") else { return nil }
        return String(what[..<colon])
    }

    /// `nil` when the server's NFS port accepts a TCP connection within ``timeout``, else why not.
    func reach(_ server: String) async -> String? {
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(Int64(timeout.components.seconds * 1000)))
                .connect(host: server, port: nfsPort).get()
            try? await channel.close()
            return nil
        } catch {
            return "port \(nfsPort): \(error)"
        }
    }

    static func space(at path: String) -> (total: UInt64, free: UInt64)? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        let block = UInt64(info.f_frsize)
        return (UInt64(info.f_blocks) * block, UInt64(info.f_bavail) * block)
    }

    /// Creates, writes, `fsync`s and removes a probe file on a separate thread. `nil` on success, else the problem.
    ///
    /// While an earlier probe of the same directory is still blocked, no new thread is started (a hung mount would
    /// otherwise collect one stuck thread per health report): the volume is reported not writable at once.
    func writeProbe(directory: String) async -> String? {
        let started = Self.probesInFlight.withLock { $0.insert(directory).inserted }
        guard started else {
            return "an earlier write probe of \(directory) is still blocked (hung mount?)"
        }
        let (stream, continuation) = AsyncStream<String?>.makeStream()
        // A thread of its own: on a hung mount the write never returns and must not hold a pool thread.
        let thread = Thread {
            let result = Self.probeFile(in: directory)
            _ = Self.probesInFlight.withLock { $0.remove(directory) }
            continuation.yield(result)
            continuation.finish()
        }
        thread.start()
        return await withTaskGroup(of: String??.self) { group in
            group.addTask {
                for await result in stream { return .some(result) }
                return .some("the probe ended without a result")
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return Task.isCancelled ? nil : .some("the write probe did not finish within \(timeout)")
            }
            defer { group.cancelAll() }
            while let next = await group.next() {
                if let next { return next }
            }
            return "the write probe was cancelled"
        }
    }

    /// Directories with a probe thread running (process-wide: every probe of the agent shares it).
    private static let probesInFlight = Mutex<Set<String>>([])

    private static func probeFile(in directory: String) -> String? {
        var random = SystemRandomNumberGenerator()
        let path = "\(directory)/.muster-probe-\(getpid())-\(random.next() % 1_000_000_000)"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return "not writable: create \(path): \(String(cString: strerror(errno)))" }
        defer { unlink(path) }
        let payload = Array("muster write probe\n".utf8)
        let written = payload.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if written != payload.count {
            let reason = written < 0 ? String(cString: strerror(errno)) : "short write"
            close(fd)
            return "not writable: write \(path): \(reason)"
        }
        if fsync(fd) != 0 {
            let reason = String(cString: strerror(errno))
            close(fd)
            return "not writable: fsync \(path): \(reason)"
        }
        if close(fd) != 0 { return "not writable: close \(path): \(String(cString: strerror(errno)))" }
        return nil
    }
}
