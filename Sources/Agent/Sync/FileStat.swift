#if canImport(Glibc)
    import Glibc
#endif

/// What the change journal records of one entry: everything `lstat(2)` says that rsync `-aHAX` copies or that
/// changes when it is copied. `ctime` cannot be set by a user and moves on any change of content, metadata, xattrs
/// or ACLs, so equal values (with `mtime`, size, inode, mode and owner) mean the entry was not touched.
struct FileStat: Sendable, Equatable {
    /// `st_mode`: the kind (`S_IFMT`) and the permission bits.
    var mode: UInt32
    var userID: UInt32
    var groupID: UInt32
    var size: UInt64
    /// Nanoseconds since the epoch.
    var modificationTime: Int64
    /// Nanoseconds since the epoch.
    var changeTime: Int64
    var inode: UInt64
    var linkCount: UInt64

    init(
        mode: UInt32, userID: UInt32, groupID: UInt32, size: UInt64, modificationTime: Int64, changeTime: Int64,
        inode: UInt64, linkCount: UInt64
    ) {
        self.mode = mode
        self.userID = userID
        self.groupID = groupID
        self.size = size
        self.modificationTime = modificationTime
        self.changeTime = changeTime
        self.inode = inode
        self.linkCount = linkCount
    }

    init(_ info: Glibc.stat) {
        self.init(
            mode: UInt32(info.st_mode), userID: info.st_uid, groupID: info.st_gid, size: UInt64(max(0, info.st_size)),
            modificationTime: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
            changeTime: Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec),
            inode: UInt64(info.st_ino), linkCount: UInt64(info.st_nlink))
    }

    /// `lstat(2)` of `root` + `/` + `relative` (raw bytes); `nil` when it fails (e.g. the entry does not exist).
    static func lstat(root: String, relative: [UInt8]) -> FileStat? {
        var info = Glibc.stat()
        let result = TreeWalker.withCString(TreeWalker.cPath(root: root, relative: relative)) { Glibc.lstat($0, &info) }
        return result == 0 ? FileStat(info) : nil
    }

    var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }

    /// A non-directory with more than one name: rsync `-H` links it with its other names, which a list of changed
    /// paths cannot express.
    var isHardLinked: Bool { !isDirectory && linkCount > 1 }

    /// This destination entry is still what a clean rsync made of `source` before `mark` (a `ctime` on this entry's
    /// filesystem's clock): not changed since, of the same kind, and of the same size for a regular file or symlink.
    /// Owner, mode bits and times are rsync's to set and are not compared (an unprivileged rsync cannot set owners).
    func isUnchangedCopy(of source: FileStat, before mark: Int64) -> Bool {
        let kind = UInt32(S_IFMT)
        guard changeTime < mark, mode & kind == source.mode & kind else { return false }
        return isDirectory || size == source.size
    }

    /// Bytes of one record in the journal file.
    static let encodedSize = 4 * 3 + 8 * 5
}
