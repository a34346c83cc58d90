#if canImport(CoreFoundation)
    // With MemberImportVisibility, members of glibc structs (stat, dirent, sockaddr, passwd, statvfs) may resolve to
    // CoreFoundation's copy of the headers depending on build order, so that module is imported explicitly.
    import CoreFoundation
#endif
#if canImport(CDispatch)
    // Same reason: depending on build order `struct stat`'s members resolve to CDispatch's copy of the headers.
    import CDispatch
#endif
#if canImport(Glibc)
    // Glibc only, no Foundation: with MemberImportVisibility, `struct stat`'s members seen through Foundation
    // resolve to CoreFoundation/CDispatch's copies of the glibc headers and would need those imports.
    import Glibc
#endif

/// The parts of `lstat(2)`/`fstat(2)` that module building and object checks need.
public struct FileStatus: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case regular, directory, symlink, characterDevice, blockDevice, fifo, socket, unknown
    }

    public var kind: Kind
    /// `st_mode & 07777`.
    public var permissions: UInt32
    public var size: UInt64

    /// `lstat(2)`: does not follow a final symlink. `nil` with `errno` set when it fails.
    public static func lstat(_ path: String) -> FileStatus? {
        var info = stat()
        guard Glibc.lstat(path, &info) == 0 else { return nil }
        return FileStatus(info)
    }

    /// `fstat(2)`. `nil` with `errno` set when it fails.
    public static func fstat(_ fd: Int32) -> FileStatus? {
        var info = stat()
        guard Glibc.fstat(fd, &info) == 0 else { return nil }
        return FileStatus(info)
    }

    /// Sets access and modification time to the epoch without following a symlink (`utimensat(2)`).
    /// Returns `false` with `errno` set when it fails.
    public static func setEpochTimes(_ path: String) -> Bool {
        var times = [timespec(tv_sec: 0, tv_nsec: 0), timespec(tv_sec: 0, tv_nsec: 0)]
        return utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW) == 0
    }

    private init(_ info: stat) {
        switch info.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        case S_IFCHR: kind = .characterDevice
        case S_IFBLK: kind = .blockDevice
        case S_IFIFO: kind = .fifo
        case S_IFSOCK: kind = .socket
        default: kind = .unknown
        }
        permissions = UInt32(info.st_mode & 0o7777)
        size = UInt64(max(0, info.st_size))
    }
}
