import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Files the seed workflow edits in place (JSON path rewrites, config edits): the original is kept beside the file
/// as `<file><suffix>` (written once, so a re-run never overwrites the true original), the file is replaced
/// atomically with its own mode and owner, and ``restore(_:suffix:dryRun:)`` puts the backup back for a rollback.
enum BackedUpFile {
    static let defaultSuffix = ".pre-cluster"

    /// The backup suffix a spec asked for, or the default.
    static func suffix(_ requested: String?) throws -> String {
        let suffix = requested ?? defaultSuffix
        guard !suffix.isEmpty, !suffix.contains("/") else {
            throw MusterError(.invalidInput, "backupSuffix '\(suffix)' must be a non-empty file name suffix")
        }
        return suffix
    }

    static func read(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MusterError(.io, "cannot read \(path): \(String(cString: strerror(errno))); no file was changed")
        }
        return Array(data)
    }

    /// Keeps `original` as the backup (unless one exists) and replaces `path` with `edited`.
    static func replace(_ path: String, original: [UInt8], with edited: [UInt8], suffix: String) throws {
        let info = try status(path)
        let backup = path + suffix
        if access(backup, F_OK) != 0 {
            try SecureFile.write(original, to: backup, mode: info.mode, owner: (info.uid, info.gid))
        }
        try SecureFile.write(edited, to: path, mode: info.mode, owner: (info.uid, info.gid))
    }

    /// Puts `<path><suffix>` back over `path` byte for byte (with the backup's mode and owner); the backup stays.
    ///
    /// - Returns: `nil` when there is no backup, otherwise whether the file differed from it.
    static func restore(_ path: String, suffix: String, dryRun: Bool) throws -> Bool? {
        let backup = path + suffix
        guard access(backup, F_OK) == 0 else { return nil }
        let original = try read(backup)
        let current = try read(path)
        guard original != current else { return false }
        if !dryRun {
            let info = try status(backup)
            try SecureFile.write(original, to: path, mode: info.mode, owner: (info.uid, info.gid))
        }
        return true
    }

    private static func status(_ path: String) throws -> (mode: mode_t, uid: uid_t, gid: gid_t) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw MusterError(.io, "cannot stat \(path): \(String(cString: strerror(errno)))")
        }
        return (info.st_mode & 0o7777, info.st_uid, info.st_gid)
    }
}
