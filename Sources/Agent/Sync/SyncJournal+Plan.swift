#if canImport(Glibc)
    import Glibc
#endif

extension SyncJournal {
    /// What a re-run has to do, decided by comparing fresh snapshots of both trees with the journal.
    struct Plan: Sendable {
        enum Decision: Sendable, Equatable {
            /// Nothing rsync `-aHAX` would act on changed: do not start it.
            case unchanged
            /// Give rsync these paths only (``Plan/changedPaths``).
            case partial
            /// The journal cannot prove a partial run safe; the reason, for the log and the report.
            case full(String)
        }

        var decision: Decision
        /// Paths present in the source that changed on either side, are new, or are missing or different on the
        /// destination (raw bytes, `[]` the root): rsync's `--files-from` list.
        var changedPaths: [[UInt8]]
        /// Paths compared (the journal's plus the new ones).
        var comparedPaths: Int
        /// Every path with the current snapshots' records (the base of the next journal after a partial run), and
        /// which of them were handed to rsync.
        var current: [Entry]
        var changed: [Bool]
    }

    /// Compares the journal with fresh snapshots of the source and the destination.
    ///
    /// A path is changed when its source record differs from the recorded one (or is new), its destination record
    /// differs (or went missing), it lacks a destination copy although no exclude could explain that, or either
    /// recorded `ctime` is within `racyWindow` (default ``racyWindow``) of the time it was read. Under a
    /// ``destinationMark``, a path without a destination record is changed when its destination entry is missing,
    /// changed at or after the mark, or not of the source record's kind and size. A full run is needed when the destination
    /// root is another directory, a snapshot has unreadable parts, the sync has excludes and anything changed (rsync
    /// does not check a listed path's parents against them), a changed path is hard-linked (on either side,
    /// now or then), with `delete` when a source path was deleted or the destination holds an entry the journal
    /// does not know (or a destination-only entry changed), or when more than `maxChangedFraction` of the paths
    /// (and more than `minimumFullRunPaths`) changed.
    ///
    /// `index` is ``pathIndex()``, when it was built ahead (while the trees are walked); `nil` builds it here.
    func plan(
        source: [SourceSize.SnapshotEntry], destination: [SourceSize.SnapshotEntry],
        destinationRoot currentRoot: RootIdentity?, delete: Bool, hasExcludes: Bool,
        maxChangedFraction: Double = 0.2, minimumFullRunPaths: Int = 100, racyWindow: Int64 = SyncJournal.racyWindow,
        index: [PathKey: Int]? = nil
    ) -> Plan {
        let index = index ?? pathIndex()
        var current = entries.map { Entry(path: $0.path, source: nil, destination: nil) }
        var changed = [Bool](repeating: false, count: entries.count)
        var newIndex: [PathKey: Int] = [:]
        var fullReason: String?
        func needFull(_ reason: String) { if fullReason == nil { fullReason = reason } }

        if currentRoot != destinationRoot {
            needFull("the destination root is not the directory the journal describes")
        }
        for entry in source {
            if let position = index[PathKey(entry.path)] {
                current[position].source = entry.stat
            } else {
                newIndex[PathKey(entry.path)] = current.count
                current.append(Entry(path: entry.path, source: entry.stat, destination: nil))
                changed.append(true)
            }
        }
        for entry in destination {
            let key = PathKey(entry.path)
            if let position = index[key] ?? newIndex[key] {
                current[position].destination = entry.stat
            } else {
                if delete {
                    needFull(
                        "the destination holds '\(TreeWalker.display(entry.path))', which the journal does not know")
                }
                current.append(Entry(path: entry.path, source: nil, destination: entry.stat))
                changed.append(false)
            }
        }
        let sourceCut = sourceReadTime - racyWindow
        let destinationCut = destinationReadTime - racyWindow
        for position in entries.indices {
            let recorded = entries[position]
            let now = current[position]
            guard let source = now.source else {
                if delete, recorded.source != nil {
                    needFull("'\(TreeWalker.display(recorded.path))' was deleted from the source")
                } else if delete,
                    recorded.destination != now.destination
                        || (recorded.destination.map { $0.changeTime >= destinationCut } ?? false)
                {
                    needFull(
                        "'\(TreeWalker.display(recorded.path))' changed on the destination and is not in the source")
                }
                continue
            }
            let destinationDiffers: Bool
            if let mark = destinationMark, recorded.destination == nil, let copied = recorded.source {
                destinationDiffers = now.destination.map { !$0.isUnchangedCopy(of: copied, before: mark) } ?? true
            } else {
                destinationDiffers =
                    recorded.destination != now.destination
                    || (recorded.destination.map { $0.changeTime >= destinationCut } ?? false)
            }
            var differs = recorded.source != source || source.changeTime >= sourceCut || destinationDiffers
            // Absent on both sides of a clean sync: only an exclude explains that.
            if !differs, now.destination == nil, !hasExcludes { differs = true }
            changed[position] = differs
        }
        var changedPaths: [[UInt8]] = []
        for position in current.indices where changed[position] {
            let entry = current[position]
            let recorded = position < entries.count ? entries[position] : Entry(path: [], source: nil, destination: nil)
            if [entry.source, entry.destination, recorded.source, recorded.destination]
                .contains(where: { $0?.isHardLinked ?? false })
            {
                needFull(
                    "'\(TreeWalker.display(entry.path))' changed and is hard-linked (rsync -H needs the whole tree)")
            }
            changedPaths.append(entry.path)
        }
        if hasExcludes, !changedPaths.isEmpty {
            // rsync checks --exclude against each listed path but not against its parents: a changed file below an
            // excluded directory would be copied by a partial run and never by a full one.
            needFull("with excludes, changed paths need rsync's own walk of the tree")
        }
        let limit = max(Double(minimumFullRunPaths), maxChangedFraction * Double(current.count))
        if Double(changedPaths.count) > limit {
            needFull("\(changedPaths.count) of \(current.count) paths changed")
        }
        let decision: Plan.Decision =
            if let fullReason { .full(fullReason) } else if changedPaths.isEmpty { .unchanged } else { .partial }
        return Plan(
            decision: decision, changedPaths: changedPaths, comparedPaths: current.count, current: current,
            changed: changed)
    }

    /// Each entry's position by path.
    func pathIndex() -> [PathKey: Int] {
        var index: [PathKey: Int] = [:]
        index.reserveCapacity(entries.count)
        for position in entries.indices { index[PathKey(entries[position].path)] = position }
        return index
    }

    /// The journal after a successful partial run: the source as walked for it, the destination as walked except for
    /// the changed paths and all their ancestors, which are read again (rsync wrote them) once the clock has reached
    /// `rereadAfter` (the end of the copy plus the racy window, so the next run can trust rsync's last writes; `nil`:
    /// at once).
    ///
    /// The journal has one destination read time, that of the re-reads. A record from the walk before the copy
    /// whose `ctime` is within `racyWindow` of that walk (`walkTime`) is left out instead: a change in the same clock
    /// tick as its reading would be invisible, and the later read time would make it look settled. The next run then
    /// hands that path to rsync.
    static func afterPartialRun(
        plan: Plan, fingerprint: String, destination: String, destinationRoot: RootIdentity, sourceReadTime: Int64,
        walkTime: Int64, racyWindow: Int64, rereadAfter: Int64? = nil
    ) -> SyncJournal {
        // PathKey: one hash call per path, not one per byte (this runs over every entry of the tree).
        var reread = Set<PathKey>([PathKey([])])
        for position in plan.current.indices where plan.changed[position] {
            let path = plan.current[position].path
            reread.insert(PathKey(path))
            for (offset, byte) in path.enumerated() where byte == UInt8(ascii: "/") {
                reread.insert(PathKey(Array(path[..<offset])))
            }
        }
        let walkCut = walkTime - racyWindow
        var entries: [Entry] = []
        entries.reserveCapacity(plan.current.count)
        var positions: [Int] = []
        for var entry in plan.current {
            let again = reread.contains(PathKey(entry.path))
            if again {
                positions.append(entries.count)
            } else if let record = entry.destination, record.changeTime >= walkCut {
                entry.destination = nil
            }
            if again || entry.source != nil || entry.destination != nil { entries.append(entry) }
        }
        if let rereadAfter {
            let wait = rereadAfter - now()
            if wait > 0 { usleep(UInt32(min(wait, 10_000_000_000) / 1000)) }
        }
        let readTime = now()
        var gone = false
        for position in positions {
            entries[position].destination = FileStat.lstat(root: destination, relative: entries[position].path)
            if entries[position].source == nil, entries[position].destination == nil { gone = true }
        }
        if gone { entries.removeAll { $0.source == nil && $0.destination == nil } }
        return SyncJournal(
            fingerprint: fingerprint, destinationRoot: destinationRoot, sourceReadTime: sourceReadTime,
            destinationReadTime: readTime, entries: entries)
    }

    /// The journal after a successful full run without excludes, the destination not walked: the source snapshot,
    /// the destination root's record (`destination`, read at `destinationReadTime`) and the ``destinationMark``.
    static func afterFullRun(
        source: [SourceSize.SnapshotEntry], fingerprint: String, destination root: FileStat,
        destinationRoot: RootIdentity, sourceReadTime: Int64, mark: Int64, destinationReadTime: Int64
    ) -> SyncJournal {
        var entries: [Entry] = []
        entries.reserveCapacity(source.count)
        for entry in source {
            entries.append(Entry(path: entry.path, source: entry.stat, destination: entry.path.isEmpty ? root : nil))
        }
        return SyncJournal(
            fingerprint: fingerprint, destinationRoot: destinationRoot, sourceReadTime: sourceReadTime,
            destinationReadTime: destinationReadTime, destinationMark: mark, entries: entries)
    }

    /// The journal after a successful full run: both snapshots joined by path.
    static func afterFullRun(
        source: [SourceSize.SnapshotEntry], destination: [SourceSize.SnapshotEntry], fingerprint: String,
        destinationRoot: RootIdentity, sourceReadTime: Int64, destinationReadTime: Int64
    ) -> SyncJournal {
        var entries: [Entry] = []
        entries.reserveCapacity(max(source.count, destination.count))
        var index: [PathKey: Int] = [:]
        index.reserveCapacity(source.count)
        for entry in source {
            index[PathKey(entry.path)] = entries.count
            entries.append(Entry(path: entry.path, source: entry.stat, destination: nil))
        }
        for entry in destination {
            if let position = index[PathKey(entry.path)] {
                entries[position].destination = entry.stat
            } else {
                entries.append(Entry(path: entry.path, source: nil, destination: entry.stat))
            }
        }
        return SyncJournal(
            fingerprint: fingerprint, destinationRoot: destinationRoot, sourceReadTime: sourceReadTime,
            destinationReadTime: destinationReadTime, entries: entries)
    }
}

/// A raw path as a dictionary key, hashed in one call over its bytes (`[UInt8]`'s own `Hashable` feeds the hasher
/// byte by byte, which made comparing a 100k-path journal several times slower).
struct PathKey: Hashable {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    static func == (a: PathKey, b: PathKey) -> Bool {
        guard a.bytes.count == b.bytes.count else { return false }
        return a.bytes.withUnsafeBytes { x in
            b.bytes.withUnsafeBytes { y in
                guard let left = x.baseAddress, let right = y.baseAddress else { return true }  // both empty
                return memcmp(left, right, x.count) == 0
            }
        }
    }
}
