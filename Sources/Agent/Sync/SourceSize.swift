import Dispatch
import Foundation
import Shared
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
/// With `snapshot`, the same walk also `lstat`s every entry (directories and symlinks too) and returns each one's
/// ``FileStat`` for the change journal (``SyncJournal``): it then descends into excluded directories as well, so
/// that a difference between ``ExcludeMatcher`` and rsync's own filter can never hide a change; the size figures
/// still leave excluded entries out.
///
/// The walk runs on threads of its own, off the cooperative pool (STYLE.md convention 4): it is all blocking system
/// calls.
enum SourceSize {
    struct Result: Sendable, Equatable {
        var bytes: UInt64 = 0
        var entries = 0
        /// Sum of the sizes of regular files and symlink targets (excludes applied, hard links counted each time,
        /// as rsync's "Total file size"); only with `snapshot`.
        var regularBytes: UInt64 = 0
        /// Directories that could not be read and entries that could not be `lstat`ed for a reason other than
        /// having vanished; only with `snapshot` (a snapshot with holes cannot prove anything unchanged).
        var unreadable = 0
    }

    /// One entry of a snapshot walk: the path relative to the root (raw bytes, `[]` is the root itself).
    struct SnapshotEntry: Sendable {
        var path: [UInt8]
        var stat: FileStat
    }

    /// - Parameters:
    ///   - workers: threads walking at once (the precheck runs before rsync, so all cores are free).
    /// - Throws: ``TreeWalker/WalkError`` when `root` itself cannot be opened.
    static func measure(root: String, excludes: ExcludeMatcher, workers: Int) async throws -> Result {
        try await run(root: root, excludes: excludes, workers: workers, snapshot: false).result
    }

    /// ``measure(root:excludes:workers:)`` that also `lstat`s every entry (see the type's documentation). The
    /// snapshot holds the root itself (path `[]`) and every entry below it, excluded or not, in no order.
    static func snapshot(
        root: String, excludes: ExcludeMatcher, workers: Int
    ) async throws -> (result: Result, entries: [SnapshotEntry]) {
        try await run(root: root, excludes: excludes, workers: workers, snapshot: true)
    }

    /// ``snapshot(root:excludes:workers:)`` of what is below the directory `below` (a path relative to `root`,
    /// raw bytes): entries keep paths relative to `root`; `below` itself is not in the snapshot nor in the figures.
    /// `excluded`: `below` is excluded, so everything below it is walked for the snapshot but not counted.
    static func snapshot(
        root: String, below: [UInt8], excluded: Bool, excludes: ExcludeMatcher, workers: Int
    ) async throws -> (result: Result, entries: [SnapshotEntry]) {
        try await run(
            root: root, start: Walk.Start(path: below, excluded: excluded), excludes: excludes, workers: workers,
            snapshot: true)
    }

    private static func run(
        root: String, start: Walk.Start? = nil, excludes: ExcludeMatcher, workers: Int, snapshot: Bool
    ) async throws -> (result: Result, entries: [SnapshotEntry]) {
        let probe = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard probe >= 0 else { throw TreeWalker.WalkError(path: root, operation: "open", errno: errno) }
        var rootInfo = Glibc.stat()
        let rootStat = fstat(probe, &rootInfo) == 0 ? FileStat(rootInfo) : nil
        close(probe)
        let walk = Walk(
            root: root, start: start ?? Walk.Start(path: [], excluded: false), excludes: excludes, snapshot: snapshot)
        var (result, entries) = await withCheckedContinuation { continuation in
            let group = DispatchGroup()
            for _ in 0..<max(1, workers) {
                group.enter()
                // Threads of their own: Dispatch's global queues on Linux are only as wide as the CPU count and
                // also run Swift concurrency's jobs, so walkers there starved the progress ticker and each other.
                Thread.detachNewThread {
                    walk.work()
                    group.leave()
                }
            }
            group.notify(queue: .global()) { continuation.resume(returning: walk.total()) }
        }
        if snapshot, start == nil, let rootStat { entries.append(SnapshotEntry(path: [], stat: rootStat)) }
        if !snapshot {
            result.regularBytes = 0
            result.unreadable = 0
        }
        return (result, entries)
    }

    /// The shared queue and the per-worker results.
    private final class Walk: Sendable {
        struct Directory {
            var path: [UInt8]
            /// Below an excluded directory (walked only for the snapshot, not counted).
            var excluded: Bool
        }

        /// The directory the walk starts in (the root: `[]`).
        typealias Start = Directory

        private struct Queue {
            var directories: [Directory]
            /// Directories queued or being read; the walk is over when this reaches 0.
            var pending = 1
        }

        private struct Partial {
            var result = Result()
            /// Hard-linked files: identity → footprint, deduplicated across workers at the end.
            var links: [FileIdentity: UInt64] = [:]
            var entries: [SnapshotEntry] = []
        }

        private struct FileIdentity: Hashable {
            var device: UInt64
            var inode: UInt64
        }

        private let root: String
        private let excludes: ExcludeMatcher
        private let snapshot: Bool
        private let queue: WorkQueue<Queue>
        private let partials = Mutex<[Partial]>([])

        init(root: String, start: Start, excludes: ExcludeMatcher, snapshot: Bool) {
            self.queue = WorkQueue(Queue(directories: [start]))
            self.root = root
            self.excludes = excludes
            self.snapshot = snapshot
        }

        func total() -> (Result, [SnapshotEntry]) {
            partials.withLock { partials in
                var result = Result()
                var links: [FileIdentity: UInt64] = [:]
                var entries: [SnapshotEntry] = []
                entries.reserveCapacity(partials.reduce(0) { $0 + $1.entries.count } + 1)
                for index in partials.indices {
                    result.bytes += partials[index].result.bytes
                    result.entries += partials[index].result.entries
                    result.regularBytes += partials[index].result.regularBytes
                    result.unreadable += partials[index].result.unreadable
                    links.merge(partials[index].links) { first, _ in first }
                    entries.append(contentsOf: partials[index].entries)
                    partials[index].entries = []
                }
                result.bytes += links.values.reduce(0, +)
                return (result, entries)
            }
        }

        /// The next directory to read; waits (without spinning: on a cold cache a spinning worker takes the CPU the
        /// others and rsync need) while another worker reads a directory that may add more; nil when all are read.
        private func next() -> Directory? {
            queue.lock()
            defer { queue.unlock() }
            while true {
                if let directory = queue.state.directories.popLast() { return directory }
                if queue.state.pending == 0 { return nil }
                queue.wait()
            }
        }

        func work() {
            var partial = Partial()
            var found: [Directory] = []
            while let directory = next() {
                found.removeAll(keepingCapacity: true)
                read(directory, into: &partial, subdirectories: &found)
                queue.lock()
                queue.state.directories.append(contentsOf: found)
                queue.state.pending += found.count - 1
                // Wake the waiting workers when there is work for them, or when the walk is over.
                if !found.isEmpty || queue.state.pending == 0 { queue.broadcast() }
                queue.unlock()
            }
            partials.withLock { $0.append(partial) }
        }

        private func read(_ parent: Directory, into partial: inout Partial, subdirectories: inout [Directory]) {
            let directory = parent.path
            let fd = TreeWalker.withCString(TreeWalker.cPath(root: root, relative: directory)) {
                open($0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            guard fd >= 0, let stream = fdopendir(fd) else {
                if fd >= 0 { close(fd) } else if errno != ENOENT { partial.result.unreadable += 1 }
                return
            }
            defer { closedir(stream) }
            let needPaths = !excludes.isEmpty || snapshot
            while let dirent = readdir(stream) {
                guard var name = TreeWalker.entryName(dirent) else { continue }
                var type = Int32(dirent.pointee.d_type)
                name.append(0)
                var info = Glibc.stat()
                if snapshot || type == Int32(DT_UNKNOWN) || type == Int32(DT_REG) {
                    let result = TreeWalker.withCString(name) { fstatat(fd, $0, &info, AT_SYMLINK_NOFOLLOW) }
                    guard result == 0 else {
                        // Vanished or unreadable: rsync will say so.
                        if errno != ENOENT { partial.result.unreadable += 1 }
                        continue
                    }
                    switch info.st_mode & S_IFMT {
                    case S_IFREG: type = Int32(DT_REG)
                    case S_IFDIR: type = Int32(DT_DIR)
                    default: type = Int32(DT_UNKNOWN)
                    }
                }
                name.removeLast()
                let isDirectory = type == Int32(DT_DIR)
                var path: [UInt8] = []
                var excluded = parent.excluded
                if needPaths || isDirectory {
                    path = directory.isEmpty ? name : directory + [UInt8(ascii: "/")] + name
                    if !excluded, !excludes.isEmpty, excludes.excludes(path, isDirectory: isDirectory) {
                        // Outside a snapshot, an excluded entry and everything below it is simply skipped.
                        guard snapshot else { continue }
                        excluded = true
                    }
                }
                if snapshot { partial.entries.append(SnapshotEntry(path: path, stat: FileStat(info))) }
                if isDirectory { subdirectories.append(Directory(path: path, excluded: excluded)) }
                if excluded { continue }
                if snapshot, info.st_mode & S_IFMT == S_IFLNK {
                    partial.result.regularBytes += UInt64(max(0, info.st_size))  // rsync counts link targets too
                }
                partial.result.entries += 1
                if isDirectory {
                    partial.result.bytes += 4096
                } else if type == Int32(DT_REG) {
                    partial.result.regularBytes += UInt64(max(0, info.st_size))
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

/// State shared by threads that wait for each other: an `NSCondition` and the value it guards. Touch `state` only
/// between `lock()` and `unlock()`.
final class WorkQueue<State>: @unchecked Sendable {
    private let condition = NSCondition()
    var state: State

    init(_ state: State) { self.state = state }

    func lock() { condition.lock() }
    func unlock() { condition.unlock() }
    /// Releases the lock until ``broadcast()``, then holds it again.
    func wait() { condition.wait() }
    func broadcast() { condition.broadcast() }
}

/// A snapshot walk of a sync's source: the sizes and every entry.
typealias SourceWalk = (result: SourceSize.Result, entries: [SourceSize.SnapshotEntry])

extension SyncEngine {
    /// The snapshot walk of the source (excludes applied to the sizes), on all cores: nothing else runs yet.
    /// - Throws: ``MusterError`` (`invalidInput`) when the source cannot be read.
    func walkSource(_ spec: SyncSpec, excludes: ExcludeMatcher) async throws -> SourceWalk {
        do {
            return try await SourceSize.snapshot(root: spec.source, excludes: excludes, workers: Self.walkers)
        } catch let error as TreeWalker.WalkError {
            throw Self.unreadableSource(error)
        }
    }

    static func unreadableSource(_ error: TreeWalker.WalkError) -> MusterError {
        MusterError(.invalidInput, "cannot read the source: \(error)", hint: "check that it exists and is readable")
    }

    /// Threads for a tree walk: all cores, 2 to 8.
    static var walkers: Int { min(8, max(2, ProcessInfo.processInfo.activeProcessorCount)) }

    /// Threads for the walk of a first copy's source (the lanes'): at least 8, whatever the core count. The lanes
    /// copy nothing until it is over, and on a cold cache it mostly waits for the disk, so more reads in flight
    /// finish it sooner (1.7–2.2 s instead of 2.4–2.5 s with 2 threads, 108k files cold, 2 cores).
    static var firstCopyWalkers: Int { max(8, walkers) }
}

/// Runs `body` on a new thread of its own and returns its result: blocking work that must not wait behind other
/// blocking work in Dispatch's CPU-wide global pool (the journal load during the walks).
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}
