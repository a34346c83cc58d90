import Foundation
import Logging
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Agent

#if canImport(Glibc)
    import Glibc
#endif

/// The change journal against real rsync on real trees: re-runs start no rsync when nothing changed, hand rsync
/// only the changed paths otherwise, and fall back to a full rsync whenever the journal cannot prove less. rsync
/// runs through a wrapper that logs every invocation, so "rsync was not started" is observed, not inferred.
@Suite(.serialized) struct SyncJournalTests {
    /// A source tree, a destination, a state directory and an engine with the journal on.
    struct Setup {
        let temp: TemporaryDirectory
        let source: String
        let destination: String
        let journals: String
        let invocations: String
        let logs = LogRecorder()
        let engine: SyncEngine

        init(_ name: String, files: Int = 60) throws {
            temp = try TemporaryDirectory(name)
            source = temp.path + "/src"
            destination = temp.path + "/dst"
            journals = temp.path + "/state/sync-journals"
            invocations = temp.path + "/rsync-invocations"
            let wrapper = temp.path + "/rsync-wrapper"
            // One line per invocation, NUL-free: the arguments joined by spaces.
            try SyncFixture.script(wrapper, "echo \"$*\" >> '\(invocations)'\nexec rsync \"$@\"")
            for index in 0..<files {
                try SyncFixture.write(
                    source, "dir\(index % 4)/sub\(index % 3)/file\(index).txt",
                    SyncFixture.text(100 + index * 37 % 2000, seed: UInt64(index)))
            }
            try SyncFixture.write(source, "top.txt", SyncFixture.text(10, seed: 7))
            guard symlink("dir0/sub0/file0.txt", source + "/link") == 0 else { throw POSIXError(.EIO) }
            let logs = self.logs
            var logger = Logger(label: "sync-journal-tests") { _ in logs }
            logger.logLevel = .info
            var engine = SyncEngine(
                rsync: Rsync(executable: wrapper), progressInterval: .milliseconds(100), journalDirectory: journals,
                logger: logger)
            // The tests change files right after a sync; the racy rule has its own deterministic test below.
            engine.journalRacyWindow = .zero
            // One rsync per run, so the invocation log counts runs; first copies in lanes: SyncLanesTests.
            engine.copyLanes = 1
            self.engine = engine
        }

        func remove() { temp.remove() }

        /// rsync runs (not `--version`) since the last call.
        func rsyncRuns() throws -> [String] {
            let text = (try? String(contentsOfFile: invocations, encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(atPath: invocations)
            return text.split(separator: "\n").map(String.init).filter { $0 != "--version" }
        }

        static func fileTimes(_ root: String) throws -> [String] {
            let output = try runCommand("/usr/bin/find", [root, "-type", "f", "-printf", "%P|%T@\\0"])
            return output.stdout.split(separator: "\0").map(String.init).sorted()
        }

        /// The one journal in the state directory.
        func journal() throws -> SyncJournal {
            try SyncJournal.load(path: journals + "/" + (try #require(journalFiles().first)))
        }

        func journalFiles() throws -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: journals)) ?? []).filter { $0.hasSuffix(".journal") }
        }

        /// Byte-, name- and metadata-identical (contents, kinds, modes, owners, sizes, link targets, mtimes, xattrs).
        func expectIdentical(sourceLocation: SourceLocation = #_sourceLocation) throws {
            #expect(try SyncFixture.identical(source, destination), sourceLocation: sourceLocation)
            #expect(
                try SyncFixture.listing(source) == SyncFixture.listing(destination), sourceLocation: sourceLocation)
            // Regular files' mtimes to the nanosecond (rsync leaves a directory's mtime alone when it equals the
            // source's to the second, so directories are not compared).
            #expect(try Self.fileTimes(source) == Self.fileTimes(destination), sourceLocation: sourceLocation)
        }
    }

    // MARK: - No-op and partial runs

    @Test func localFilesystemsGetAShortRacyWindowAndARunRightAfterACopyTrustsIt() async throws {
        #expect(
            SyncJournal.racyWindow(source: "/tmp", destination: "/tmp/not/yet/created") == SyncJournal.localRacyWindow)
        // procfs stands in for a filesystem not known to be local (NFS: the server's clock).
        #expect(SyncJournal.racyWindow(source: "/tmp", destination: "/proc/self") == SyncJournal.racyWindow)

        let temp = try TemporaryDirectory("sync-journal-local-window")
        defer { temp.remove() }
        let source = temp.path + "/src"
        for top in ["a", "b", "c"] {
            for index in 0..<20 {
                try SyncFixture.write(source, "\(top)/d\(index % 4)/f\(index)", SyncFixture.text(100, seed: 1))
            }
        }
        // The source's own writes must be older than the window when the first sync reads them.
        try await Task.sleep(for: .milliseconds(100))
        var engine = SyncFixture.engine()
        engine.journalDirectory = temp.path + "/journals"
        #expect(engine.journalRacyWindow == nil)
        let first = try await engine.run(SyncSpec(source: source, destination: temp.path + "/dst"))
        #expect(first.journal?.written == true, "\(first.message)")
        // At once: rsync's last writes (directory times) were older than the 50 ms window when muster read them.
        let again = try await engine.run(SyncSpec(source: source, destination: temp.path + "/dst"))
        #expect(again.mode == .journalUnchanged, "\(String(describing: again.journal))")
    }

    @Test func noOpReRunStartsNoRsyncAndLeavesTheDestinationUntouched() async throws {
        let setup = try Setup("journal-noop")
        defer { setup.remove() }
        let spec = SyncSpec(source: setup.source, destination: setup.destination)

        let first = try await setup.engine.run(spec)
        #expect(first.succeeded, "\(first.message)")
        #expect(first.mode == .full)
        #expect(first.journal?.written == true)
        #expect(try setup.rsyncRuns().count == 1)
        #expect(try setup.journalFiles().count == 1)
        let before = try SyncFixture.fingerprint(setup.destination)
        let listing = try SyncFixture.listing(setup.destination)

        let events = EventLog()
        let second = try await setup.engine.run(spec, onEvent: events.record)
        #expect(second.succeeded, "\(second.message)")
        #expect(second.mode == .journalUnchanged)
        #expect(second.journal?.used == true)
        #expect(second.journal?.changedPaths == 0)
        #expect(second.stats.transferredFiles == 0)
        #expect(second.stats.files == first.stats.files)  // rsync's count: every entry and the root
        #expect(second.stats.totalFileBytes == first.stats.totalFileBytes)
        #expect(try setup.rsyncRuns().isEmpty, "a no-op re-run started rsync")
        #expect(events.progress.last?.isComplete == true)
        #expect(events.progress.last?.transferredFiles == 0)
        #expect(try SyncFixture.fingerprint(setup.destination) == before)
        #expect(try SyncFixture.listing(setup.destination) == listing)
        try setup.expectIdentical()
    }

    @Test func partialRunCopiesContentModeXattrAndTimeChanges() async throws {
        let setup = try Setup("journal-partial")
        defer { setup.remove() }
        let spec = SyncSpec(source: setup.source, destination: setup.destination)
        _ = try await setup.engine.run(spec)
        _ = try setup.rsyncRuns()

        try SyncFixture.write(setup.source, "dir1/sub1/file1.txt", SyncFixture.text(999, seed: 4242))
        #expect(chmod(setup.source + "/dir2/sub2/file2.txt", 0o600) == 0)
        try SyncFixture.setXattr(setup.source + "/dir3/sub0/file3.txt", "user.muster", "journal")
        // Metadata only, no ACLs involved: a new mtime, same content and size.
        #expect(FileStatus.setEpochTimes(setup.source + "/dir0/sub1/file4.txt"))
        if geteuid() == 0 { #expect(lchown(setup.source + "/dir1/sub2/file5.txt", 4321, 4321) == 0) }
        try SyncFixture.write(setup.source, "dir0/new/added.txt", SyncFixture.text(50, seed: 5))

        let report = try await setup.engine.run(spec)
        #expect(report.succeeded, "\(report.message)")
        #expect(report.mode == .journalPartial)
        let changed = try #require(report.journal?.changedPaths)
        #expect(changed >= 6 && changed <= 10, "changed paths: \(changed)")
        let runs = try setup.rsyncRuns()
        #expect(runs.count == 1)
        #expect(runs.first?.contains("--files-from=") == true && runs.first?.contains("--from0") == true)
        #expect(runs.first?.contains("-aHAX --numeric-ids --partial") == true)
        // New content, the new file, and the new mtime (rsync's quick check then copies the file again); the others
        // are attributes only.
        #expect(report.stats.transferredFiles == 3)
        try setup.expectIdentical()
        #expect(try SyncFixture.xattr(setup.destination + "/dir3/sub0/file3.txt", "user.muster") == "journal")
        var info = stat()
        #expect(lstat(setup.destination + "/dir0/sub1/file4.txt", &info) == 0 && info.st_mtim.tv_sec == 0)
        #expect(lstat(setup.destination + "/dir2/sub2/file2.txt", &info) == 0 && info.st_mode & 0o777 == 0o600)
        if geteuid() == 0 {
            #expect(lstat(setup.destination + "/dir1/sub2/file5.txt", &info) == 0 && info.st_uid == 4321)
        }

        // The journal was updated: the next run has nothing to do.
        let again = try await setup.engine.run(spec)
        #expect(again.mode == .journalUnchanged)
        #expect(try setup.rsyncRuns().isEmpty)
    }

    @Test func changesBehindMustersBackOnTheDestinationAreRepaired() async throws {
        let setup = try Setup("journal-tamper")
        defer { setup.remove() }
        let spec = SyncSpec(source: setup.source, destination: setup.destination)
        _ = try await setup.engine.run(spec)
        // The full run did not walk the destination: its journal holds a mark, and the changes below come right
        // after it, in the same second.
        let journal = try setup.journal()
        #expect(journal.destinationMark != nil)
        #expect(journal.entries.filter { $0.destination != nil }.map(\.path) == [[]])

        try SyncFixture.write(setup.destination, "dir1/sub1/file1.txt", Array("tampered\n".utf8))
        #expect(unlink(setup.destination + "/dir2/sub2/file2.txt") == 0)
        #expect(chmod(setup.destination + "/dir3/sub0/file3.txt", 0o777) == 0)
        #expect(unlink(setup.destination + "/link") == 0)

        let report = try await setup.engine.run(spec)
        #expect(report.succeeded, "\(report.message)")
        #expect(report.mode == .journalPartial)
        // The four entries and the two directories the unlinks changed (dir2/sub2 and the root).
        #expect(report.journal?.changedPaths == 6, "\(String(describing: report.journal))")
        #expect(report.stats.transferredFiles == 2)
        try setup.expectIdentical()
        // The partial run's journal records the destination again.
        let after = try setup.journal()
        #expect(after.destinationMark == nil)
        #expect(try await setup.engine.run(spec).mode == .journalUnchanged)
    }

    @Test func aNewHardLinkForcesAFullRun() async throws {
        let setup = try Setup("journal-hardlink")
        defer { setup.remove() }
        let spec = SyncSpec(source: setup.source, destination: setup.destination)
        _ = try await setup.engine.run(spec)
        _ = try setup.rsyncRuns()

        #expect(link(setup.source + "/dir0/sub0/file0.txt", setup.source + "/dir1/hardlink.txt") == 0)
        let report = try await setup.engine.run(spec)
        #expect(report.succeeded, "\(report.message)")
        #expect(report.mode == .full)
        #expect(report.journal?.reason?.contains("hard-linked") == true, "\(report.journal?.reason ?? "-")")
        let runs = try setup.rsyncRuns()
        #expect(runs.count == 1 && runs.first?.contains("--files-from") == false)
        var a = stat()
        var b = stat()
        #expect(lstat(setup.destination + "/dir0/sub0/file0.txt", &a) == 0)
        #expect(lstat(setup.destination + "/dir1/hardlink.txt", &b) == 0)
        #expect(a.st_ino == b.st_ino && a.st_nlink == 2)
        try setup.expectIdentical()
    }

    @Test func deleteModeRemovesWhatTheSourceDeleted() async throws {
        let setup = try Setup("journal-delete")
        defer { setup.remove() }
        let spec = SyncSpec(source: setup.source, destination: setup.destination, delete: true)
        _ = try await setup.engine.run(spec)

        #expect(unlink(setup.source + "/dir2/sub2/file2.txt") == 0)
        let report = try await setup.engine.run(spec)
        #expect(report.succeeded, "\(report.message)")
        #expect(report.mode == .full)
        #expect(report.journal?.reason?.contains("deleted from the source") == true)
        #expect(report.stats.deletedFiles == 1)
        #expect(FileStatus.lstat(setup.destination + "/dir2/sub2/file2.txt") == nil)
        try setup.expectIdentical()

        // An entry the journal does not know, in delete mode: full run, which removes it.
        try SyncFixture.write(setup.destination, "dir0/stray.txt", Array("stray\n".utf8))
        let stray = try await setup.engine.run(spec)
        #expect(stray.mode == .full)
        #expect(FileStatus.lstat(setup.destination + "/dir0/stray.txt") == nil)
        try setup.expectIdentical()

        // Without deletions, delete mode still gets partial runs.
        try SyncFixture.write(setup.source, "dir1/sub1/file1.txt", SyncFixture.text(77, seed: 77))
        let partial = try await setup.engine.run(spec)
        #expect(partial.mode == .journalPartial)
        try setup.expectIdentical()
    }

    @Test func oddNamesInTheChangedSet() async throws {
        let setup = try Setup("journal-names")
        defer { setup.remove() }
        let newline = Array("dir0/line\nbreak.txt".utf8)
        let latin1: [UInt8] = Array("dir1/caf".utf8) + [0xE9] + Array(".txt".utf8)
        let odd: [UInt8] = Array("dir2/".utf8) + [0xFF, 0xFE, 0x0A] + Array(" x".utf8)
        try SyncFixture.write(setup.source, newline, Array("one\n".utf8))
        let spec = SyncSpec(source: setup.source, destination: setup.destination)
        _ = try await setup.engine.run(spec)

        try SyncFixture.write(setup.source, newline, Array("two, longer\n".utf8))
        try SyncFixture.write(setup.source, latin1, Array("new\n".utf8))
        try SyncFixture.write(setup.source, odd, Array("odd\n".utf8), mode: 0o640)
        let report = try await setup.engine.run(spec)
        #expect(report.succeeded, "\(report.message)")
        #expect(report.mode == .journalPartial)
        #expect(report.stats.transferredFiles == 3)
        try setup.expectIdentical()
        #expect(try await setup.engine.run(spec).mode == .journalUnchanged)
    }

    // MARK: - Falling back and switching off

    @Test func aCorruptJournalMeansAFullRunALogLineAndAFreshJournal() async throws {
        let setup = try Setup("journal-corrupt")
        defer { setup.remove() }
        let spec = SyncSpec(source: setup.source, destination: setup.destination)
        _ = try await setup.engine.run(spec)
        let file = setup.journals + "/" + (try #require(try setup.journalFiles().first))
        var bytes = try #require(FileManager.default.contents(atPath: file))
        bytes[bytes.count / 2] ^= 0x5A
        try bytes.write(to: URL(fileURLWithPath: file))
        _ = try setup.rsyncRuns()

        let report = try await setup.engine.run(spec)
        #expect(report.succeeded)
        #expect(report.mode == .full)
        #expect(report.journal?.reason?.contains("checksum") == true, "\(report.journal?.reason ?? "-")")
        #expect(report.journal?.written == true)
        #expect(try setup.rsyncRuns().count == 1)
        #expect(
            setup.logs.messages.contains {
                $0.contains("sync journal is unusable") && $0.contains("checksum") && $0.contains("full rsync")
            }, "\(setup.logs.messages)")
        #expect(try await setup.engine.run(spec).mode == .journalUnchanged)

        // Truncated, and another version: the same.
        try Data(bytes.prefix(20)).write(to: URL(fileURLWithPath: file))
        #expect(try await setup.engine.run(spec).mode == .full)
        var other = try SyncJournal.load(path: file)
        other.entries = []
        var encoded = other.encoded()
        encoded[8] = 99
        try Data(encoded).write(to: URL(fileURLWithPath: file))
        let versioned = try await setup.engine.run(spec)
        #expect(versioned.mode == .full)
        #expect(
            versioned.journal?.reason?.contains("checksum") == true
                || versioned.journal?.reason?.contains("version") == true)
    }

    @Test func noJournalAndDryRunsAlwaysRunRsyncAndNeverWriteAJournal() async throws {
        let setup = try Setup("journal-off")
        defer { setup.remove() }
        let spec = SyncSpec(source: setup.source, destination: setup.destination)
        let dry = try await setup.engine.run(spec, dryRun: true)
        #expect(dry.mode == .full && dry.journal == nil)
        #expect(try setup.journalFiles().isEmpty)
        for _ in 0..<2 {
            let report = try await setup.engine.run(spec, journal: false)
            #expect(report.succeeded)
            #expect(report.mode == .full && report.journal == nil)
        }
        #expect(try setup.rsyncRuns().count == 3)
        #expect(try setup.journalFiles().isEmpty)

        _ = try await setup.engine.run(spec)
        #expect(try setup.journalFiles().count == 1)
        _ = try setup.rsyncRuns()
        #expect(try await setup.engine.run(spec, journal: false).mode == .full)
        #expect(try await setup.engine.run(spec, dryRun: true).mode == .full)
        #expect(try setup.rsyncRuns().count == 2)
    }

    @Test func excludedPathsStayConsistentAndUncopied() async throws {
        let setup = try Setup("journal-excludes")
        defer { setup.remove() }
        let spec = SyncSpec(source: setup.source, destination: setup.destination, excludes: ["sub2/", "*.log"])
        try SyncFixture.write(setup.source, "dir0/debug.log", Array("log\n".utf8))
        _ = try await setup.engine.run(spec)
        #expect(FileStatus.lstat(setup.destination + "/dir0/debug.log") == nil)
        #expect(try await setup.engine.run(spec).mode == .journalUnchanged)
        // A change below an excluded directory: a full rsync, whose own --exclude keeps it out.
        try SyncFixture.write(setup.source, "dir2/sub2/file2.txt", Array("changed\n".utf8))
        let report = try await setup.engine.run(spec)
        #expect(report.succeeded)
        #expect(report.mode == .full)
        #expect(FileStatus.lstat(setup.destination + "/dir2/sub2") == nil)
        #expect(try await setup.engine.run(spec).mode == .journalUnchanged)
    }

    // MARK: - The decision itself

    @Test func racyEntriesAreNeverTrusted() {
        let old: Int64 = 1_000_000_000_000_000_000
        func stat(_ ctime: Int64, inode: UInt64 = 1) -> FileStat {
            FileStat(
                mode: UInt32(S_IFREG) | 0o644, userID: 0, groupID: 0, size: 10, modificationTime: ctime,
                changeTime: ctime, inode: inode, linkCount: 1)
        }
        let readTime = old + 10_000_000_000
        let root = SyncJournal.RootIdentity(device: 1, inode: 2, filesystemID: 3, mountFlags: 0)
        let journal = SyncJournal(
            fingerprint: "f", destinationRoot: root, sourceReadTime: readTime, destinationReadTime: readTime,
            entries: [
                .init(path: Array("calm".utf8), source: stat(old), destination: stat(old, inode: 9)),
                .init(path: Array("racy".utf8), source: stat(readTime - 1_000_000_000), destination: stat(old)),
                .init(path: Array("after".utf8), source: stat(old), destination: stat(readTime + 5)),
            ])
        let source = journal.entries.map { SourceSize.SnapshotEntry(path: $0.path, stat: $0.source!) }
        let destination = journal.entries.map { SourceSize.SnapshotEntry(path: $0.path, stat: $0.destination!) }
        let plan = journal.plan(
            source: source, destination: destination, destinationRoot: root, delete: false, hasExcludes: false)
        #expect(plan.decision == .partial)
        #expect(Set(plan.changedPaths.map { String(decoding: $0, as: UTF8.self) }) == ["racy", "after"])
        let moved = journal.plan(
            source: source, destination: destination,
            destinationRoot: .init(device: 1, inode: 99, filesystemID: 3, mountFlags: 0), delete: false,
            hasExcludes: false)
        #expect(moved.decision != .partial && moved.decision != .unchanged)
    }

    @Test func underAMarkOnlyEntriesUnchangedBeforeItOfTheSameKindAndSizeAreTrusted() {
        let old: Int64 = 1_000_000_000_000_000_000
        let mark = old + 10_000_000_000
        func stat(_ kind: mode_t, size: UInt64 = 10, ctime: Int64 = old, inode: UInt64 = 1) -> FileStat {
            FileStat(
                mode: kind | 0o644, userID: 0, groupID: 0, size: size, modificationTime: old,
                changeTime: ctime, inode: inode, linkCount: 1)
        }
        let root = SyncJournal.RootIdentity(device: 1, inode: 2, filesystemID: 3, mountFlags: 0)
        let rootRecord = stat(S_IFDIR, ctime: mark)
        let names = ["copied", "dir", "at-mark", "after", "missing", "kind", "size"]
        let sources: [String: FileStat] = [
            "copied": stat(S_IFREG), "dir": stat(S_IFDIR, size: 4096), "at-mark": stat(S_IFREG),
            "after": stat(S_IFREG), "missing": stat(S_IFREG), "kind": stat(S_IFREG), "size": stat(S_IFREG),
        ]
        // rsync's copies: other inodes and owners are fine; a directory's size is the filesystem's own.
        let destinations: [String: FileStat] = [
            "copied": stat(S_IFREG, ctime: mark - 1, inode: 7), "dir": stat(S_IFDIR, size: 12288, ctime: old + 5),
            "at-mark": stat(S_IFREG, ctime: mark), "after": stat(S_IFREG, ctime: mark + 1),
            "kind": stat(S_IFLNK, ctime: old), "size": stat(S_IFREG, size: 11, ctime: old),
        ]
        let source =
            [SourceSize.SnapshotEntry(path: [], stat: stat(S_IFDIR, size: 4096))]
            + names.map { SourceSize.SnapshotEntry(path: Array($0.utf8), stat: sources[$0]!) }
        let journal = SyncJournal.afterFullRun(
            source: source, fingerprint: "f", destination: rootRecord, destinationRoot: root, sourceReadTime: mark,
            mark: mark, destinationReadTime: mark + 3_000_000_000)
        #expect(journal.destinationMark == mark)
        let destination =
            [SourceSize.SnapshotEntry(path: [], stat: rootRecord)]
            + destinations.map { SourceSize.SnapshotEntry(path: Array($0.key.utf8), stat: $0.value) }
        let plan = journal.plan(
            source: source, destination: destination, destinationRoot: root, delete: false, hasExcludes: false)
        #expect(plan.decision == .partial)
        #expect(
            Set(plan.changedPaths.map { String(decoding: $0, as: UTF8.self) })
                == ["at-mark", "after", "missing", "kind", "size"])
        // The mark survives the file.
        let temp = try? TemporaryDirectory("journal-mark")
        defer { temp?.remove() }
        if let temp {
            #expect(throws: Never.self) { try journal.write(to: temp.path + "/m.journal") }
            let loaded = try? SyncJournal.load(path: temp.path + "/m.journal")
            #expect(loaded?.destinationMark == mark)
            #expect(loaded?.entries.count == journal.entries.count)
        }
    }

    @Test func aPartialRunsJournalRereadsWhatRsyncWroteAndLeavesOutRecordsRacyAtTheWalk() throws {
        let temp = try TemporaryDirectory("journal-partial")
        defer { temp.remove() }
        try SyncFixture.write(temp.path, "changed", Array("new\n".utf8))
        let walk = SyncJournal.now()
        let old = walk - 10_000_000_000
        func stat(_ ctime: Int64, kind: mode_t = S_IFREG) -> FileStat {
            FileStat(
                mode: kind | 0o644, userID: 0, groupID: 0, size: 10, modificationTime: ctime, changeTime: ctime,
                inode: 1, linkCount: 1)
        }
        let root = SyncJournal.RootIdentity(device: 1, inode: 2, filesystemID: 3, mountFlags: 0)
        let records: [(String, FileStat, FileStat)] = [
            ("", stat(old, kind: S_IFDIR), stat(old, kind: S_IFDIR)),
            ("calm", stat(old), stat(old)),
            // Changed on the destination 10 ms before this run's walk, in a way the walk could not see.
            ("hot", stat(old), stat(walk - 10_000_000)),
            ("changed", stat(old), stat(old)),
        ]
        let journal = SyncJournal(
            fingerprint: "f", destinationRoot: root, sourceReadTime: walk, destinationReadTime: walk,
            entries: records.map { .init(path: Array($0.0.utf8), source: $0.1, destination: $0.2) })
        let source = records.map {
            SourceSize.SnapshotEntry(path: Array($0.0.utf8), stat: $0.0 == "changed" ? stat(old + 1) : $0.1)
        }
        let destination = records.map { SourceSize.SnapshotEntry(path: Array($0.0.utf8), stat: $0.2) }
        let plan = journal.plan(
            source: source, destination: destination, destinationRoot: root, delete: false, hasExcludes: false,
            racyWindow: 0)
        #expect(plan.changedPaths == [Array("changed".utf8)])
        let settled = SyncJournal.now() + 20_000_000
        let after = SyncJournal.afterPartialRun(
            plan: plan, fingerprint: "f", destination: temp.path, destinationRoot: root, sourceReadTime: walk,
            walkTime: walk, racyWindow: 50_000_000, rereadAfter: settled)
        #expect(after.destinationReadTime >= settled)
        let byName = Dictionary(
            uniqueKeysWithValues: after.entries.map { (String(decoding: $0.path, as: UTF8.self), $0) })
        #expect(byName["calm"]?.destination == stat(old))
        #expect(byName["hot"] != nil && byName["hot"]?.destination == nil)
        #expect(byName["changed"]?.destination?.size == 4)
        #expect(byName[""]?.destination?.isDirectory == true)
        // The next run hands the racy path to rsync again.
        let next = after.plan(
            source: source, destination: destination, destinationRoot: root, delete: false, hasExcludes: false,
            racyWindow: 0)
        #expect(next.changedPaths.contains(Array("hot".utf8)))
    }

    @Test func journalFilesRoundTripRawNames() throws {
        let temp = try TemporaryDirectory("journal-file")
        defer { temp.remove() }
        let entry = FileStat(
            mode: UInt32(S_IFREG) | 0o600, userID: 1, groupID: 2, size: 3, modificationTime: -4, changeTime: 5,
            inode: 6, linkCount: 7)
        let journal = SyncJournal(
            fingerprint: "source=/a\ndestination=/b",
            destinationRoot: .init(device: 1, inode: 2, filesystemID: 3, mountFlags: 4),
            sourceReadTime: 8, destinationReadTime: 9,
            entries: [
                .init(path: [], source: entry, destination: nil),
                .init(path: [0x0A, 0xFF, 0x00, 0x41], source: nil, destination: entry),
                .init(path: Array("ok".utf8), source: entry, destination: entry),
            ])
        let path = temp.path + "/deep/x.journal"
        try FileManager.default.createDirectory(atPath: temp.path + "/deep", withIntermediateDirectories: true)
        try journal.write(to: path)
        let loaded = try SyncJournal.load(path: path)
        #expect(loaded.fingerprint == journal.fingerprint)
        #expect(loaded.destinationRoot == journal.destinationRoot)
        #expect(loaded.entries.map(\.path) == journal.entries.map(\.path))
        #expect(loaded.entries.map(\.source) == journal.entries.map(\.source))
        #expect(loaded.entries.map(\.destination) == journal.entries.map(\.destination))
        #expect(throws: SyncJournal.LoadError.self) { try SyncJournal.load(path: temp.path + "/missing") }
    }
}

/// A swift-log handler that keeps the rendered messages, for asserting on log lines.
final class LogRecorder: LogHandler, Sendable {
    private let lines = Mutex<[String]>([])

    var messages: [String] { lines.withLock { $0 } }

    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }

    func log(event: LogEvent) {
        lines.withLock { $0.append("\(event.level) \(event.message)") }
    }
}
