import CXattr
import Crypto
import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// The files of one module version, read from its mounted EROFS metadata image: for every path its kind, mode and
/// the object it points at (`trusted.overlay.redirect`) or its link target. Reading metadata only, no object is
/// opened.
///
/// Used by reattach to decide which services changed (``fingerprint(of:)``). **Which files belong to a service:**
/// its executable (`exec[0]`) and every `exec` argument that names a path in the image (a directory with
/// everything below it), following symlinks inside the image. Files that no service names are *shared*: a change
/// to any of them counts as a change for every service (a library or a config file used by all). So a new version
/// that changes only `/bin/api` restarts only the service running `/bin/api`; one that changes `/lib/x` or
/// `/etc/shop/config.toml` (unless passed as an argument) restarts all of them.
struct ModuleFileIndex: Sendable {
    /// Path inside the module (`/bin/api`) → a stable description (`f 755 <object digest>`, `l <target>`,
    /// `d 1777`).
    var entries: [String: String]

    /// Reads the tree at `metaRoot` (the mounted `meta.erofs`, as the agent sees it).
    /// - Throws: `MusterError` `.io` when the tree cannot be read.
    static func read(metaRoot: String) throws -> ModuleFileIndex {
        var entries: [String: String] = [:]
        var pending = [""]
        while let relative = pending.popLast() {
            let directory = metaRoot + relative
            let names: [String]
            do {
                names = try FileManager.default.contentsOfDirectory(atPath: directory)
            } catch {
                throw MusterError(.io, "cannot read \(directory): \(error)", cause: UnderlyingError(error))
            }
            for name in names {
                let path = "\(relative)/\(name)"
                let full = metaRoot + path
                guard let status = FileStatus.lstat(full) else { throw NodeModuleStore.ioError("lstat", full) }
                let mode = String(status.permissions, radix: 8)
                switch status.kind {
                case .directory:
                    entries[path] = "d \(mode)"
                    pending.append(path)
                case .symlink:
                    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: full)) ?? ""
                    entries[path] = "l \(target)"
                case .regular:
                    let redirect = try readRedirect(full)
                    entries[path] = "f \(mode) \(status.size) \(redirect ?? "empty")"
                default:
                    entries[path] = "o \(mode)"
                }
            }
        }
        return ModuleFileIndex(entries: entries)
    }

    /// `trusted.overlay.redirect` of a file (`/ab/cdef…`), `nil` when it has none (an empty file).
    private static func readRedirect(_ path: String) throws -> String? {
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = buffer.withUnsafeMutableBytes {
            lgetxattr(path, "trusted.overlay.redirect", $0.baseAddress, $0.count)
        }
        if count < 0 {
            if errno == ENODATA { return nil }
            throw NodeModuleStore.ioError("lgetxattr trusted.overlay.redirect", path)
        }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    /// The module paths `service` uses: `exec[0]` and the `exec` arguments naming a path in the image, with the
    /// targets of symlinks among them (inside the image, up to 16 hops).
    func paths(of service: ModuleManifest.Service) -> Set<String> {
        var out = Set<String>()
        var pending: [String] = []
        for (index, argument) in service.exec.enumerated() where argument.hasPrefix("/") {
            let normalized = Self.normalize(argument)
            if index == 0 || entries[normalized] != nil { pending.append(normalized) }
        }
        var hops = 0
        while let path = pending.popLast() {
            guard out.insert(path).inserted else { continue }
            guard let entry = entries[path], entry.hasPrefix("l "), hops < 16 else { continue }
            hops += 1
            let target = String(entry.dropFirst(2))
            let parent = (path as NSString).deletingLastPathComponent
            pending.append(Self.normalize(target.hasPrefix("/") ? target : "\(parent)/\(target)"))
        }
        return out
    }

    /// A digest over the entries of the service's own paths and of every shared path (one no service names).
    /// Two versions give the same fingerprint exactly when nothing the service may read changed.
    func fingerprint(of service: ModuleManifest.Service, in manifest: ModuleManifest) -> String {
        let own = paths(of: service)
        let claimedByAny = manifest.services.reduce(into: Set<String>()) { $0.formUnion(paths(of: $1)) }
        var hasher = SHA256()
        for path in entries.keys.sorted() {
            let isOwn = own.contains { Self.isWithin(path, $0) }
            let isShared = !claimedByAny.contains { Self.isWithin(path, $0) }
            guard isOwn || isShared, let entry = entries[path] else { continue }
            hasher.update(data: Data("\(path)\t\(entry)\n".utf8))
        }
        // A path the service names that is not in the image (yet) also counts.
        for path in own.sorted() where entries[path] == nil {
            hasher.update(data: Data("\(path)\tabsent\n".utf8))
        }
        return ContentDigest.hex(hasher.finalize())
    }

    private static func isWithin(_ path: String, _ root: String) -> Bool {
        path == root || path.hasPrefix(root == "/" ? "/" : root + "/")
    }

    /// `/a/./b//../c` → `/a/c` (never above `/`).
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch component {
            case ".": continue
            case "..": _ = parts.popLast()
            default: parts.append(component)
            }
        }
        return "/" + parts.joined(separator: "/")
    }
}
