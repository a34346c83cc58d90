import CXattr
import Crypto
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// The change journal of one sync (source, destination, options): what both trees looked like after the last sync
/// that completed cleanly, so that a re-run hands rsync only the paths that changed since, or nothing at all.
///
/// Per relative path (raw bytes; `[]` is the root) it holds the ``FileStat`` of the source and of the destination
/// (either may be absent), plus the destination root's identity and, per side, the time the recorded state was
/// read. A path whose `ctime` lies within ``racyWindow`` of (or after) that time is never trusted: a change in the
/// same clock tick as the read would leave every recorded field equal (git's "racy" rule).
///
/// After a full run the destination is not walked again: the journal then carries a ``destinationMark`` instead of
/// destination records (see there), which saves a walk of the whole destination at the end of a first copy.
///
/// File format (little endian): magic `MUSTERSJ`, `UInt32` version, `UInt32` length + fingerprint text,
/// destination identity (`UInt64` device, inode, `statvfs` fsid and mount flags), `Int64` source and destination
/// read times (ns since the epoch), (version 2) `UInt8` 1 + `Int64` destination mark or `UInt8` 0, `UInt64` entry
/// count, entries (`UInt32` path length, path, `UInt8` flags: 1 source, 2 destination, then the present records),
/// and the SHA-256 of everything before it. Version 1 files (no mark) are still read.
struct SyncJournal: Sendable {
    /// The destination root: a different directory (re-created, another mount) invalidates the journal.
    struct RootIdentity: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
        /// `statvfs` `f_fsid`.
        var filesystemID: UInt64
        /// `statvfs` `f_flag` (read-only, nosuid, …): a remount with other options is another destination.
        var mountFlags: UInt64

        /// `lstat` + `statvfs` of `path`; `nil` when either fails.
        static func of(_ path: String) -> RootIdentity? {
            var info = Glibc.stat()
            guard Glibc.lstat(path, &info) == 0 else { return nil }
            var fs = statvfs()
            guard statvfs(path, &fs) == 0 else { return nil }
            return RootIdentity(
                device: UInt64(info.st_dev), inode: UInt64(info.st_ino), filesystemID: UInt64(fs.f_fsid),
                mountFlags: UInt64(fs.f_flag))
        }
    }

    struct Entry: Sendable {
        var path: [UInt8]
        var source: FileStat?
        var destination: FileStat?
    }

    /// Why a journal file could not be used.
    struct LoadError: Error, Sendable, CustomStringConvertible {
        var description: String
        /// There is no journal file (the first sync, or the last one did not finish cleanly).
        var missing = false
    }

    static let version: UInt32 = 2
    static let magic = Array("MUSTERSJ".utf8)
    /// Entries changed within this much of the time they were read are treated as changed: the default, and the
    /// window on filesystems muster does not know to be local (NFS: the server's clock may be seconds off).
    static let racyWindow: Int64 = 2_000_000_000
    /// The window when source and destination are both on local filesystems: their timestamps come from this
    /// machine's clock, in ticks of at most one jiffy (10 ms at HZ=100); five ticks of margin.
    static let localRacyWindow: Int64 = 50_000_000

    /// Filesystem types (`statfs` `f_type`) whose timestamps come from the local clock.
    static let localFilesystemTypes: Set<Int64> = [
        0xEF53,  // ext2/3/4
        0x5846_5342,  // xfs
        0x9123_683E,  // btrfs
        0x0102_1994,  // tmpfs
        0xF2F5_2010,  // f2fs
        0x2FC1_2FC1,  // zfs
        0x794C_7630,  // overlayfs
    ]

    /// The racy window for a sync between `source` and `destination` (the nearest existing ancestor for a path
    /// not created yet): ``localRacyWindow`` when both are on ``localFilesystemTypes``, else ``racyWindow``.
    static func racyWindow(source: String, destination: String) -> Int64 {
        func isLocal(_ path: String) -> Bool {
            let type = try? TreeWalker.nearestExisting(path, operation: "statfs") { candidate, error -> Int64? in
                let type = muster_filesystem_type(candidate)
                if type < 0 { error = errno }
                return type >= 0 ? Int64(type) : nil
            }
            return type.map { localFilesystemTypes.contains($0) } ?? false
        }
        return isLocal(source) && isLocal(destination) ? localRacyWindow : racyWindow
    }

    /// What the sync was: source, destination, options, rsync version. Journals of other syncs never apply.
    var fingerprint: String
    var destinationRoot: RootIdentity
    /// When the walk of the source whose records are kept began (ns since the epoch, `CLOCK_REALTIME`).
    var sourceReadTime: Int64
    /// When the destination's records were read (the latest read of any of them).
    var destinationReadTime: Int64
    /// Set by a full run that did not walk the destination afterwards (``afterFullRun(source:fingerprint:destination:``
    /// ``destinationRoot:sourceReadTime:)``): the destination root's `ctime` (its clock, ns) once muster re-set the
    /// root's modification time after rsync was done. An entry without a destination record then stands for "as
    /// rsync left it": it counts as unchanged when the destination entry exists, has the source record's kind (and
    /// size, for a regular file) and a `ctime` before the mark. Any later change of the entry gets a `ctime` at or
    /// after the mark, which is read from the same clock; the root itself has an ordinary record.
    var destinationMark: Int64? = nil
    var entries: [Entry]

    // MARK: - Fingerprint and location

    /// The text that identifies a sync: everything that decides what rsync does, verification aside.
    static func fingerprint(spec: SyncSpec, rsyncVersion: String) -> String {
        var lines = [
            "source=\(SyncSpec.normalized(spec.source))", "destination=\(SyncSpec.normalized(spec.destination))",
            "delete=\(spec.delete)", "options=\(Rsync.baseOptions.joined(separator: " "))",
            "rsync=\(rsyncVersion)",
        ]
        lines += spec.excludes.map { "exclude=\($0)" }
        return lines.joined(separator: "\n")
    }

    /// `<directory>/<sha256 of the fingerprint>.journal`.
    static func path(directory: String, fingerprint: String) -> String {
        let digest = SHA256.hash(data: Array(fingerprint.utf8))
        let hex = Array("0123456789abcdef".utf8)
        var name: [UInt8] = []
        for byte in digest {
            name.append(hex[Int(byte >> 4)])
            name.append(hex[Int(byte & 0xf)])
        }
        return directory + "/" + String(decoding: name, as: UTF8.self) + ".journal"
    }

    /// Now as nanoseconds since the epoch on the clock file times use.
    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    // MARK: - Encoding

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128 + fingerprint.utf8.count + entries.count * (8 + 40 + 2 * FileStat.encodedSize))
        out += Self.magic
        Self.append(Self.version, to: &out)
        Self.append(UInt32(fingerprint.utf8.count), to: &out)
        out += fingerprint.utf8
        Self.append(destinationRoot.device, to: &out)
        Self.append(destinationRoot.inode, to: &out)
        Self.append(destinationRoot.filesystemID, to: &out)
        Self.append(destinationRoot.mountFlags, to: &out)
        Self.append(sourceReadTime, to: &out)
        Self.append(destinationReadTime, to: &out)
        if let destinationMark {
            out.append(1)
            Self.append(destinationMark, to: &out)
        } else {
            out.append(0)
        }
        Self.append(UInt64(entries.count), to: &out)
        for entry in entries {
            Self.append(UInt32(entry.path.count), to: &out)
            out += entry.path
            out.append((entry.source == nil ? 0 : 1) | (entry.destination == nil ? 0 : 2))
            if let stat = entry.source { Self.append(stat, to: &out) }
            if let stat = entry.destination { Self.append(stat, to: &out) }
        }
        out += SHA256.hash(data: out)
        return out
    }

    static func decode(_ bytes: [UInt8]) throws -> SyncJournal {
        guard bytes.count >= magic.count + 4 + 32, Array(bytes.prefix(magic.count)) == magic else {
            throw LoadError(description: "not a sync journal")
        }
        let body = bytes.count - 32
        guard Array(SHA256.hash(data: bytes[0..<body])) == Array(bytes[body...]) else {
            throw LoadError(description: "checksum mismatch (truncated or damaged)")
        }
        return try bytes.withUnsafeBytes { raw in
            var reader = Reader(raw: UnsafeRawBufferPointer(rebasing: raw[0..<body]), offset: magic.count)
            let version: UInt32 = try reader.read()
            guard version == 1 || version == Self.version else {
                throw LoadError(description: "version \(version), this agent writes \(Self.version)")
            }
            let fingerprintLength: UInt32 = try reader.read()
            let fingerprint = String(decoding: try reader.bytes(Int(fingerprintLength)), as: UTF8.self)
            let root = RootIdentity(
                device: try reader.read(), inode: try reader.read(), filesystemID: try reader.read(),
                mountFlags: try reader.read())
            let sourceReadTime: Int64 = try reader.read()
            let destinationReadTime: Int64 = try reader.read()
            var destinationMark: Int64?
            if version >= 2 {
                let marked: UInt8 = try reader.read()
                guard marked <= 1 else { throw LoadError(description: "bad mark flag \(marked)") }
                if marked == 1 { destinationMark = try reader.read() as Int64 }
            }
            let count: UInt64 = try reader.read()
            guard count <= UInt64(raw.count) else { throw LoadError(description: "bad entry count \(count)") }
            var entries: [Entry] = []
            entries.reserveCapacity(Int(count))
            for _ in 0..<count {
                let length: UInt32 = try reader.read()
                let path = Array(try reader.bytes(Int(length)))
                let flags: UInt8 = try reader.read()
                guard flags & ~3 == 0 else { throw LoadError(description: "bad entry flags \(flags)") }
                let source = flags & 1 != 0 ? try reader.stat() : nil
                let destination = flags & 2 != 0 ? try reader.stat() : nil
                entries.append(Entry(path: path, source: source, destination: destination))
            }
            guard reader.offset == reader.raw.count else { throw LoadError(description: "trailing bytes") }
            return SyncJournal(
                fingerprint: fingerprint, destinationRoot: root, sourceReadTime: sourceReadTime,
                destinationReadTime: destinationReadTime, destinationMark: destinationMark, entries: entries)
        }
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out += $0 }
    }

    private static func append(_ stat: FileStat, to out: inout [UInt8]) {
        append(stat.mode, to: &out)
        append(stat.userID, to: &out)
        append(stat.groupID, to: &out)
        append(stat.size, to: &out)
        append(stat.modificationTime, to: &out)
        append(stat.changeTime, to: &out)
        append(stat.inode, to: &out)
        append(stat.linkCount, to: &out)
    }

    private struct Reader {
        let raw: UnsafeRawBufferPointer
        var offset: Int

        mutating func read<T: FixedWidthInteger>() throws -> T {
            guard offset + MemoryLayout<T>.size <= raw.count else { throw LoadError(description: "truncated") }
            let value = raw.loadUnaligned(fromByteOffset: offset, as: T.self)
            offset += MemoryLayout<T>.size
            return T(littleEndian: value)
        }

        mutating func bytes(_ count: Int) throws -> UnsafeRawBufferPointer.SubSequence {
            guard count >= 0, offset + count <= raw.count else { throw LoadError(description: "truncated") }
            defer { offset += count }
            return raw[offset..<(offset + count)]
        }

        mutating func stat() throws -> FileStat {
            FileStat(
                mode: try read(), userID: try read(), groupID: try read(), size: try read(),
                modificationTime: try read(), changeTime: try read(), inode: try read(), linkCount: try read())
        }
    }

    // MARK: - Files

    /// Reads and checks the journal at `path`.
    /// - Throws: ``LoadError`` for a file that cannot be read or used (``LoadError/missing`` when there is none).
    static func load(path: String) throws -> SyncJournal {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let error = errno
            if error == ENOENT { throw LoadError(description: "none yet", missing: true) }
            throw LoadError(description: "cannot open: \(String(cString: strerror(error)))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var info = Glibc.stat()
        if fstat(fd, &info) == 0 { bytes.reserveCapacity(Int(info.st_size)) }
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw LoadError(description: "cannot read: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes += chunk[0..<count]
        }
        return try decode(bytes)
    }

    /// Writes the journal to `path` atomically (a temporary file in the same directory renamed over it), creating
    /// the directory (0700) if needed. Not fsynced: a journal lost or left older by a crash still describes a real
    /// past state, and every change since shows up in the `ctime`s.
    func write(to path: String) throws {
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !directory.isEmpty, mkdir(directory, 0o700) != 0, errno != EEXIST {
            throw LoadError(description: "cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        do {
            try SecureFile.write(encoded(), to: path, mode: 0o600, durable: false)
        } catch let error as MusterError {
            throw LoadError(description: error.message)
        }
    }
}
