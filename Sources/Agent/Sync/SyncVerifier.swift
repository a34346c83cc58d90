/// Compares a finished copy with its source.
///
/// Every entry (rsync's excludes applied): present on both sides, same kind, and for non-symlinks the same
/// permissions, owner and group; regular files the same size; symlinks the same target; files hard-linked
/// together in the source hard-linked together in the destination. With `delete` the destination must not
/// hold extra entries. Then the sha256 of regular files: all of them (`full`), or a deterministic sample
/// (`sample`): every k-th file in byte order of the path with k = ⌈files / 256⌉, plus the 4 largest.
/// The first difference in path order is reported. xattrs and ACLs are not compared.
struct SyncVerifier: Sendable {
    /// The first difference found.
    struct Mismatch: Sendable, Equatable, Codable, CustomStringConvertible {
        var path: String
        var problem: String
        var description: String { "\(path): \(problem)" }
    }

    struct Report: Sendable, Equatable, Codable {
        var mode: SyncSpec.Verify
        var entriesCompared: Int
        var filesHashed: Int
        var bytesHashed: UInt64
        var mismatch: Mismatch?
    }

    /// Files hashed in `sample` mode besides the largest ones.
    static let sampleSize = 256

    var spec: SyncSpec
    /// Compare owner and group (only meaningful when rsync ran as root and could set them).
    var compareOwners: Bool = true

    /// - Throws: ``TreeWalker/WalkError`` when either tree cannot be read.
    func verify() throws -> Report {
        let excludes = ExcludeMatcher(spec.excludes)
        var sourceEntries: [TreeEntry] = []
        try TreeWalker.walk(root: spec.source, sorted: true, strict: true, excludes: excludes) {
            sourceEntries.append($0)
        }
        var destination: [[UInt8]: TreeEntry] = [:]
        var destinationOrder: [[UInt8]] = []
        try TreeWalker.walk(root: spec.destination, sorted: true, strict: true, excludes: excludes) {
            destination[$0.path] = $0
            destinationOrder.append($0.path)
        }
        var report = Report(mode: spec.verify, entriesCompared: 0, filesHashed: 0, bytesHashed: 0, mismatch: nil)
        // Source inode → the destination inode its first path got: hard-link groups must map one to one.
        var linkGroups: [SourceInode: UInt64] = [:]
        for entry in sourceEntries {
            report.entriesCompared += 1
            guard let copy = destination[entry.path] else {
                report.mismatch = Mismatch(path: entry.displayPath, problem: "missing in the destination")
                return report
            }
            if let problem = Self.compare(entry, copy, owners: compareOwners) {
                report.mismatch = Mismatch(path: entry.displayPath, problem: problem)
                return report
            }
            if entry.kind == .regular, entry.linkCount > 1 {
                let key = SourceInode(device: entry.device, inode: entry.inode)
                if let expected = linkGroups[key] {
                    if expected != copy.inode {
                        report.mismatch = Mismatch(
                            path: entry.displayPath,
                            problem: "hard link in the source, separate file in the destination")
                        return report
                    }
                } else {
                    linkGroups[key] = copy.inode
                }
            }
        }
        if spec.delete {
            let sourcePaths = Set(sourceEntries.map(\.path))
            if let extra = destinationOrder.first(where: { !sourcePaths.contains($0) }) {
                report.mismatch = Mismatch(
                    path: TreeWalker.display(extra), problem: "in the destination but not in the source (--delete)")
                return report
            }
        }
        guard spec.verify != .none else { return report }
        for entry in Self.filesToHash(sourceEntries, mode: spec.verify) {
            let sourceDigest = try TreeWalker.sha256(root: spec.source, relative: entry.path)
            let copyDigest = try TreeWalker.sha256(root: spec.destination, relative: entry.path)
            report.filesHashed += 1
            report.bytesHashed += entry.size
            if sourceDigest != copyDigest {
                report.mismatch = Mismatch(path: entry.displayPath, problem: "content differs (sha256)")
                return report
            }
        }
        return report
    }

    /// The regular files to hash, in path order.
    static func filesToHash(_ entries: [TreeEntry], mode: SyncSpec.Verify) -> [TreeEntry] {
        let files = entries.filter { $0.kind == .regular }
        switch mode {
        case .none: return []
        case .full: return files
        case .sample:
            let stride = max(1, (files.count + sampleSize - 1) / sampleSize)
            var chosen = Set<Int>()
            for index in Swift.stride(from: 0, to: files.count, by: stride) { chosen.insert(index) }
            let largest = files.indices.sorted {
                files[$0].size > files[$1].size || (files[$0].size == files[$1].size && $0 < $1)
            }
            for index in largest.prefix(4) { chosen.insert(index) }
            return chosen.sorted().map { files[$0] }
        }
    }

    /// The first metadata difference between a source entry and its copy, or `nil`.
    static func compare(_ source: TreeEntry, _ copy: TreeEntry, owners: Bool) -> String? {
        if source.kind != copy.kind {
            return "is a \(source.kind.rawValue) in the source, a \(copy.kind.rawValue) in the destination"
        }
        if source.kind == .regular, source.size != copy.size {
            return "size \(source.size) in the source, \(copy.size) in the destination"
        }
        if source.kind == .symlink {
            if source.symlinkTarget != copy.symlinkTarget {
                return "symlink target \(TreeWalker.display(source.symlinkTarget ?? [])) in the source, "
                    + "\(TreeWalker.display(copy.symlinkTarget ?? [])) in the destination"
            }
        } else if source.permissions != copy.permissions {
            return
                "mode \(String(source.permissions, radix: 8)) in the source, \(String(copy.permissions, radix: 8)) in the destination"
        }
        if owners, source.userID != copy.userID || source.groupID != copy.groupID {
            return
                "owner \(source.userID):\(source.groupID) in the source, \(copy.userID):\(copy.groupID) in the destination"
        }
        return nil
    }

    private struct SourceInode: Hashable {
        var device: UInt64
        var inode: UInt64
    }
}
