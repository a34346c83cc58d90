import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Measures a source tree for the free-space precheck, fast: several threads share a queue of directories,
/// `d_type` spares an `fstatat` for everything but regular files, and paths are built only when excludes
/// need them. The figure is the one ``SyncEngine/Precheck/sourceBytes`` documents: regular files rounded up
/// to 4 KiB (once per hard-link group), 4 KiB per directory. Unreadable directories are skipped (rsync
/// reports them); nothing follows symlinks.
///
/// The walk runs on its own Dispatch threads, off the cooperative pool (STYLE.md convention 4): it is all
/// blocking system calls.
enum SourceSize {
    struct Result: Sendable, Equatable {
        var bytes: UInt64 = 0
        var entries = 0
    }

    /// - Parameters:
    ///   - workers: threads walking at once (the precheck runs before rsync, so all cores are free).
    /// - Throws: ``TreeWalker/WalkError`` when `root` itself cannot be opened.
    static func measure(root: String, excludes: ExcludeMatcher, workers: Int) async throws -> Result {
        let probe = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard probe >= 0 else { throw TreeWalker.WalkError(path: root, operation: "open", errno: errno) }
        close(probe)
        let walk = Walk(root: root, excludes: excludes)
        return await withCheckedContinuation { continuation in
            let group = DispatchGroup()
            for _ in 0..<max(1, workers) {
                group.enter()
                DispatchQueue.global().async {
                    walk.work()
                    group.leave()
                }
            }
            group.notify(queue: .global()) { continuation.resume(returning: walk.total()) }
        }
    }

    /// The shared queue and the per-worker results.
    private final class Walk: Sendable {
        private struct Queue {
            var directories: [[UInt8]] = [[]]
            /// Directories queued or being read; the walk is over when this reaches 0.
            var pending = 1
        }

        private struct Partial {
            var result = Result()
            /// Hard-linked files: identity → footprint, deduplicated across workers at the end.
            var links: [FileIdentity: UInt64] = [:]
        }

        private struct FileIdentity: Hashable {
            var device: UInt64
            var inode: UInt64
        }

        private let root: String
        private let excludes: ExcludeMatcher
        private let queue = Mutex(Queue())
        private let partials = Mutex<[Partial]>([])

        init(root: String, excludes: ExcludeMatcher) {
            self.root = root
            self.excludes = excludes
        }

        func total() -> Result {
            partials.withLock { partials in
                var result = Result()
                var links: [FileIdentity: UInt64] = [:]
                for partial in partials {
                    result.bytes += partial.result.bytes
                    result.entries += partial.result.entries
                    links.merge(partial.links) { first, _ in first }
                }
                result.bytes += links.values.reduce(0, +)
                return result
            }
        }

        private func next() -> [UInt8]? {
            while true {
                let (directory, done) = queue.withLock { queue -> ([UInt8]?, Bool) in
                    if let directory = queue.directories.popLast() { return (directory, false) }
                    return (nil, queue.pending == 0)
                }
                if let directory { return directory }
                if done { return nil }
                usleep(50)  // another worker is reading a directory that may add more
            }
        }

        func work() {
            var partial = Partial()
            var found: [[UInt8]] = []
            while let directory = next() {
                found.removeAll(keepingCapacity: true)
                read(directory, into: &partial, subdirectories: &found)
                let add = found
                queue.withLock { queue in
                    queue.directories.append(contentsOf: add)
                    queue.pending += add.count - 1
                }
            }
            partials.withLock { $0.append(partial) }
        }

        private func read(_ directory: [UInt8], into partial: inout Partial, subdirectories: inout [[UInt8]]) {
            let fd = TreeWalker.withCString(TreeWalker.cPath(root: root, relative: directory)) {
                open($0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            guard fd >= 0, let stream = fdopendir(fd) else {
                if fd >= 0 { close(fd) }
                return
            }
            defer { closedir(stream) }
            let needPaths = !excludes.isEmpty
            while let dirent = readdir(stream) {
                var name = withUnsafeBytes(of: dirent.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
                if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
                var type = Int32(dirent.pointee.d_type)
                name.append(0)
                var info = Glibc.stat()
                if type == Int32(DT_UNKNOWN) || type == Int32(DT_REG) {
                    let result = TreeWalker.withCString(name) { fstatat(fd, $0, &info, AT_SYMLINK_NOFOLLOW) }
                    guard result == 0 else { continue }  // vanished or unreadable: rsync will say so
                    switch info.st_mode & S_IFMT {
                    case S_IFREG: type = Int32(DT_REG)
                    case S_IFDIR: type = Int32(DT_DIR)
                    default: type = Int32(DT_UNKNOWN)
                    }
                }
                name.removeLast()
                let isDirectory = type == Int32(DT_DIR)
                var path: [UInt8] = []
                if needPaths || isDirectory {
                    path = directory.isEmpty ? name : directory + [UInt8(ascii: "/")] + name
                    if needPaths, excludes.excludes(path, isDirectory: isDirectory) { continue }
                }
                partial.result.entries += 1
                if isDirectory {
                    partial.result.bytes += 4096
                    subdirectories.append(path)
                } else if type == Int32(DT_REG) {
                    let footprint = (UInt64(max(0, info.st_size)) + 4095) / 4096 * 4096
                    if info.st_nlink > 1 {
                        partial.links[FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))] = footprint
                    } else {
                        partial.result.bytes += footprint
                    }
                }
            }
        }
    }
}
