import CXattr
import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Module mounts made by the agent itself with `mount(2)`, for managers that cannot run `.mount` units (a user
/// manager, `--systemd user`). Needs `CAP_SYS_ADMIN` in the target mount namespace (the agent runs as root).
///
/// The mounts must be where the manager's services see them: in the agent's own mount namespace (production: the
/// agent runs in the manager's namespace), or in the namespace of process `namespacePID` (tests driving a manager
/// in a private namespace). For the latter each operation runs on a fresh thread that detaches its file system
/// context (`unshare(CLONE_FS)`, allowed per thread) and then joins that namespace (`setns(CLONE_NEWNS)`); the
/// thread ends with the operation, so the rest of the agent never changes namespace.
struct DirectMounter: Sendable {
    let namespacePID: pid_t?

    /// Mount points below `prefix` in the target namespace (from `mountinfo`).
    func mountPoints(under prefix: String) throws -> [String] {
        let path = "/proc/\(namespacePID.map(String.init) ?? "self")/mountinfo"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MusterError(.io, "cannot read \(path)")
        }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = Self.unescape(String(fields[4]))
            return point.hasPrefix(prefix) ? point : nil
        }
    }

    /// Mounts `image` (EROFS, file-backed) at `meta` and the overlay with `objects` as data-only lower layer at
    /// `root`; mount points already mounted are left as they are.
    /// - Throws: `MusterError` `.io` naming the failed mount and errno.
    func mount(image: String, meta: String, objects: String, root: String) async throws {
        let mounted = Set(try mountPoints(under: meta)).union(try mountPoints(under: root))
        try await run { () throws(MusterError) in
            if !mounted.contains(meta) {
                guard Glibc.mount(image, meta, "erofs", UInt(MS_RDONLY), nil) == 0 else {
                    throw Self.failure("mount -t erofs \(image) \(meta)")
                }
            }
            if !mounted.contains(root) {
                let options = "lowerdir=\(meta)::\(objects),metacopy=on,redirect_dir=follow"
                let result = options.withCString { Glibc.mount("overlay", root, "overlay", UInt(MS_RDONLY), $0) }
                guard result == 0 else { throw Self.failure("mount -t overlay -o \(options) overlay \(root)") }
            }
        }
    }

    /// Detaches the mount at `path` (`umount2(MNT_DETACH)`: processes still using it keep it until they let go).
    func unmount(_ path: String) async throws {
        try await run { () throws(MusterError) in
            guard umount2(path, Int32(MNT_DETACH)) == 0 || errno == EINVAL || errno == ENOENT else {
                throw Self.failure("umount \(path)")
            }
        }
    }

    // MARK: - Internals

    private func run(_ body: @escaping @Sendable () throws(MusterError) -> Void) async throws {
        let namespacePID = namespacePID
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            // A thread of its own: joining another mount namespace changes the calling thread's file system context.
            let thread = Thread {
                do {
                    if let namespacePID { try Self.enterMountNamespace(of: namespacePID) }
                    try body()
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            thread.start()
        }
    }

    private static func enterMountNamespace(of pid: pid_t) throws(MusterError) {
        guard muster_unshare(MUSTER_CLONE_FS) == 0 else { throw failure("unshare(CLONE_FS)") }
        let path = "/proc/\(pid)/ns/mnt"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open \(path)") }
        defer { close(fd) }
        guard muster_setns(fd, MUSTER_CLONE_NEWNS) == 0 else { throw failure("setns \(path)") }
    }

    private static func failure(_ what: String) -> MusterError {
        let code = errno
        return MusterError(
            .io, "\(what): \(String(cString: strerror(code)))",
            hint: code == EPERM ? "mounting modules needs root (CAP_SYS_ADMIN)" : nil)
    }

    /// `mountinfo` escapes space, tab, newline and backslash as `\ooo`.
    static func unescape(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var bytes: [UInt8] = []
        let input = Array(text.utf8)
        var index = 0
        while index < input.count {
            if input[index] == UInt8(ascii: "\\"), index + 3 < input.count + 0,
                let value = UInt8(String(decoding: input[(index + 1)...(index + 3)], as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(input[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
