import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// A scanned module file tree (`DIR/rootfs`): what goes into the image, checked for what must not.
///
/// Only directories, regular files and symlinks are allowed; device nodes, FIFOs and sockets are refused, and
/// so is every symlink whose target leads outside the tree (a `..` above the root, also through other
/// symlinks, or an absolute target — the image is mounted at a path of the agent's choosing, so an absolute
/// target would name a host file). File names with control characters are refused too.
struct ModuleTree: ModuleTreeLookup {
    enum Kind: Equatable {
        case directory
        case regularFile
        case symlink(target: String)
    }

    struct Entry: Equatable {
        /// In-module path: `/`, `/bin`, `/bin/server`.
        var path: String
        var kind: Kind
        /// Permission bits as in the source (see ``ModuleBuilder`` for what the image keeps).
        var mode: UInt32
        var size: UInt64
    }

    /// The source directory (`DIR/rootfs`).
    let root: String
    /// Pre-order (a directory before its contents), names sorted by UTF-8 bytes: the same tree scans the same.
    let entries: [Entry]
    private let index: [String: Int]

    /// Scans `root` and checks it.
    ///
    /// - Throws: ``ModuleManifest/ValidationError`` listing every refused entry (file = `root`, field = the
    ///   in-module path), or `MusterError` `.io` when `root` cannot be read.
    static func scan(root: String) throws -> ModuleTree {
        let (tree, issues) = try scanReportingIssues(root: root)
        guard issues.isEmpty else { throw ModuleManifest.ValidationError(issues: issues) }
        return tree
    }

    /// Like ``scan(root:)`` but returns the tree together with its issues, so the manifest can still be
    /// checked against it (an `exec[0]` through an escaping symlink is reported on both).
    ///
    /// - Throws: `MusterError` when `root` is missing or unreadable.
    static func scanReportingIssues(root: String) throws -> (tree: ModuleTree, issues: [ModuleManifest.Issue]) {
        guard let status = FileStatus.lstat(root) else {
            throw MusterError(
                .notFound, "\(root) does not exist",
                hint: "a module directory holds module.yaml and rootfs/ with the files the services run")
        }
        guard status.kind == .directory else {
            throw MusterError(.invalidInput, "\(root) is not a directory")
        }
        var entries: [Entry] = [Entry(path: "/", kind: .directory, mode: status.permissions, size: 0)]
        var issues: [ModuleManifest.Issue] = []
        try walk(root: root, relative: "", entries: &entries, issues: &issues)
        var index: [String: Int] = [:]
        for (position, entry) in entries.enumerated() { index[entry.path] = position }
        let tree = ModuleTree(root: root, entries: entries, index: index)
        for entry in entries {
            guard case .symlink(let target) = entry.kind else { continue }
            if target.hasPrefix("/") {
                issues.append(
                    .init(
                        file: root, field: entry.path,
                        reason:
                            "symlink to absolute path \(target.escapedForMessage): use a relative target inside the module"
                    ))
                continue
            }
            switch tree.resolve(entry.path) {
            case .escapes:
                issues.append(
                    .init(
                        file: root, field: entry.path,
                        reason: "symlink target \(target.escapedForMessage) leads outside the module"))
            case .loop:
                issues.append(.init(file: root, field: entry.path, reason: "symlink loop"))
            case .regularFile, .directory, .missing:
                break  // a dangling link inside the tree is harmless: it stays dangling in the image
            }
        }
        return (tree, issues)
    }

    private static func walk(
        root: String, relative: String, entries: inout [Entry], issues: inout [ModuleManifest.Issue]
    ) throws {
        let directory = root + relative
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw MusterError(.io, "cannot list \(directory)", cause: UnderlyingError(error))
        }
        for name in names.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            let path = "\(relative)/\(name)"
            if name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
                issues.append(
                    .init(file: root, field: path.escapedForMessage, reason: "file name contains a control character"))
                continue
            }
            guard let status = FileStatus.lstat(root + path) else {
                throw MusterError(.io, "cannot stat \(root + path): \(String(cString: strerror(errno)))")
            }
            let mode = status.permissions
            switch status.kind {
            case .directory:
                entries.append(Entry(path: path, kind: .directory, mode: mode, size: 0))
                try walk(root: root, relative: path, entries: &entries, issues: &issues)
            case .regular:
                entries.append(Entry(path: path, kind: .regularFile, mode: mode, size: status.size))
            case .symlink:
                let target: String
                do {
                    target = try FileManager.default.destinationOfSymbolicLink(atPath: root + path)
                } catch {
                    throw MusterError(.io, "cannot read symlink \(root + path)", cause: UnderlyingError(error))
                }
                entries.append(Entry(path: path, kind: .symlink(target: target), mode: 0o777, size: 0))
            case .characterDevice:
                issues.append(
                    .init(
                        file: root, field: path,
                        reason: "is a character device; modules hold only files, directories and symlinks"))
            case .blockDevice:
                issues.append(
                    .init(
                        file: root, field: path,
                        reason: "is a block device; modules hold only files, directories and symlinks"))
            case .fifo:
                issues.append(
                    .init(
                        file: root, field: path, reason: "is a FIFO; modules hold only files, directories and symlinks")
                )
            case .socket:
                issues.append(
                    .init(
                        file: root, field: path,
                        reason: "is a socket; modules hold only files, directories and symlinks"))
            case .unknown:
                issues.append(.init(file: root, field: path, reason: "has an unknown file type"))
            }
        }
    }

    func entry(at path: String) -> Entry? { index[path].map { entries[$0] } }

    /// Resolves an absolute in-module path like the kernel would with the module as a mount: symlinks are
    /// followed (at most 40), a `..` goes to the physical parent, and a `..` at the root or an absolute
    /// target counts as leaving the module.
    func resolve(_ path: String) -> ModuleTreeResolution {
        var pending = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        var current: [String] = []
        var hops = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == "." { continue }
            if component == ".." {
                if current.isEmpty { return .escapes }
                current.removeLast()
                continue
            }
            let candidate = "/" + (current + [component]).joined(separator: "/")
            guard let entry = entry(at: candidate) else { return .missing }
            switch entry.kind {
            case .directory:
                current.append(component)
            case .regularFile:
                // A file in the middle of a path is ENOTDIR: nothing to reach, nothing escapes.
                guard pending.allSatisfy({ $0 == "." }) else { return .missing }
                return .regularFile(executable: entry.mode & 0o111 != 0)
            case .symlink(let target):
                hops += 1
                if hops > 40 { return .loop }
                if target.hasPrefix("/") { return .escapes }
                pending = target.split(separator: "/", omittingEmptySubsequences: true).map(String.init) + pending
            }
        }
        return .directory
    }
}
