import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

#if canImport(Glibc)
    import Glibc
#endif

/// A first copy in lanes (several rsync processes, `SyncEngine+Lanes.swift`) against real rsync: the result must be
/// what one rsync over the whole tree makes, down to the root's times, hard links across lanes and excludes.
@Suite(.serialized) struct SyncLanesTests {
    /// Six top-level directories of different sizes, top-level files, a symlink, odd names, a hard link across two
    /// top-level directories, an xattr, and fixed times on directories (the root's with a fraction of a second).
    private func makeSource(_ source: String) throws -> Int {
        var files = 0
        for top in 0..<6 {
            for index in 0..<(20 + top * 15) {
                try SyncFixture.write(
                    source, "top\(top)/sub\(index % 4)/f\(index).txt",
                    SyncFixture.text(100 + index * 37 % 3000, seed: UInt64(top * 1000 + index)))
                files += 1
            }
        }
        try SyncFixture.write(source, "top5/big.bin", SyncFixture.bytes(3 << 20, seed: 9))
        try SyncFixture.write(source, "README", SyncFixture.text(500, seed: 1))
        try SyncFixture.write(source, Array("new\nline \u{e9}".utf8) + [0xff], SyncFixture.text(10, seed: 2))
        files += 3
        // A second name, not a second transfer (rsync -H links it).
        #expect(link(source + "/top0/sub0/f0.txt", source + "/top3/linked.txt") == 0)
        #expect(symlink("top1/sub1", source + "/shortcut") == 0)
        try SyncFixture.setXattr(source + "/top2/sub2/f2.txt", "user.muster", "lanes")
        #expect(chmod(source + "/top4", 0o750) == 0)
        // Times seconds away from now: rsync leaves a directory's time alone when only its fraction differs.
        let touch = try runCommand(
            "/usr/bin/find", [source, "-exec", "touch", "-h", "-d", "@1300000000.25", "{}", "+"])
        #expect(touch.status == 0, "\(touch.stderr)")
        for (path, seconds) in [("/top0/sub0", 1_600_000_000), ("/top1", 1_500_000_000), ("", 1_400_000_000)] {
            let times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 123_456_789)]
            #expect(utimensat(AT_FDCWD, source + path, times, 0) == 0)
        }
        return files
    }

    @Test func aFirstCopyInLanesMakesWhatOneRsyncMakes() async throws {
        let temp = try TemporaryDirectory("sync-lanes")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let files = try makeSource(source)
        let before = try SyncFixture.fingerprint(source)

        let events = EventLog()
        var engine = SyncFixture.engine()
        engine.copyLanes = 4
        let laned = try await engine.run(
            SyncSpec(source: source, destination: temp.path + "/lanes", verify: .full), onEvent: events.record)
        engine.copyLanes = 1
        let single = try await engine.run(SyncSpec(source: source, destination: temp.path + "/one"))

        #expect(laned.succeeded, "\(laned.message)")
        #expect(laned.exitCode == 0)
        #expect(laned.lanes == 4)
        #expect(single.lanes == nil)
        #expect(laned.verification?.mismatch == nil)
        // Names, modes, owners, times (the root's to the nanosecond), xattrs and contents: as the source, as one rsync.
        for copy in ["/lanes", "/one"] {
            let differences = try differences(source, temp.path + copy)
            #expect(try SyncFixture.fingerprint(temp.path + copy) == before, "\(copy): \(differences)")
        }
        #expect(try SyncFixture.fingerprint(source) == before)
        #expect(try SyncFixture.listing(temp.path + "/lanes") == SyncFixture.listing(source))
        #expect(try SyncFixture.xattr(temp.path + "/lanes/top2/sub2/f2.txt", "user.muster") == "lanes")
        var first = stat()
        var second = stat()
        #expect(lstat(temp.path + "/lanes/top0/sub0/f0.txt", &first) == 0)
        #expect(lstat(temp.path + "/lanes/top3/linked.txt", &second) == 0)
        #expect(first.st_ino == second.st_ino, "the hard link across two lanes' entries was not kept")

        // The lanes' progress, summed: it ends complete with every file and byte.
        #expect(laned.stats.transferredFiles == files)
        #expect(laned.stats.transferredFileBytes == single.stats.transferredFileBytes)
        let last = try #require(events.progress.last)
        #expect(last.isComplete)
        #expect(last.percent == 100)
        #expect(last.transferredFiles == files)
        #expect(last.bytes == laned.stats.transferredFileBytes)
        let bytes = events.progress.map(\.bytes)
        #expect(bytes == bytes.sorted(), "progress went backwards: \(bytes)")
        #expect(events.progress.allSatisfy { $0.percent <= 100 })
    }

    /// `tar -tvv` of both trees, diffed: what a fingerprint mismatch is about.
    private func differences(_ a: String, _ b: String) throws -> String {
        let listing = "tar --sort=name --numeric-owner --xattrs --xattrs-include='*' --full-time -cvvf /dev/null -C"
        let output = try runCommand(
            "/bin/bash", ["-c", "diff <(\(listing) \"$1\" .) <(\(listing) \"$2\" .)", "sh", a, b])
        return output.stdout
    }

    @Test func excludesHoldInEveryLane() async throws {
        let temp = try TemporaryDirectory("sync-lanes-exclude")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        for top in ["a", "b", "c", "d"] {
            try SyncFixture.write(source, "\(top)/keep.txt", SyncFixture.text(200, seed: 1))
            try SyncFixture.write(source, "\(top)/scratch.tmp", SyncFixture.text(200, seed: 2))
        }
        try SyncFixture.write(source, "a/cache/x", SyncFixture.text(200, seed: 3))
        try SyncFixture.write(source, "b/cache/x", SyncFixture.text(200, seed: 4))
        var engine = SyncFixture.engine()
        engine.copyLanes = 3
        let report = try await engine.run(
            SyncSpec(source: source, destination: destination, excludes: ["*.tmp", "/a/cache", "/d"]))
        #expect(report.succeeded, "\(report.message)")
        #expect(report.lanes == 3)
        let listing = try SyncFixture.listing(destination).map { String($0.prefix(while: { $0 != "|" })) }.sorted()
        #expect(listing == ["a", "a/keep.txt", "b", "b/cache", "b/cache/x", "b/keep.txt", "c", "c/keep.txt"])
    }

    @Test func reRunsAndNonEmptyDestinationsUseOneRsync() async throws {
        let temp = try TemporaryDirectory("sync-lanes-rerun")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        for top in ["a", "b", "c"] { try SyncFixture.write(source, "\(top)/f", SyncFixture.text(100, seed: 1)) }
        try SyncFixture.write(destination, "already-here", SyncFixture.text(10, seed: 2))
        var engine = SyncFixture.engine()
        engine.journalDirectory = temp.path + "/journals"
        let onto = try await engine.run(SyncSpec(source: source, destination: destination))
        #expect(onto.succeeded, "\(onto.message)")
        #expect(onto.lanes == nil)
        let withoutJournal = try await engine.run(SyncSpec(source: source, destination: destination), journal: false)
        #expect(withoutJournal.lanes == nil)
        // The journal's first copy (an empty destination) runs in lanes too.
        let fresh = try await engine.run(SyncSpec(source: source, destination: temp.path + "/fresh"))
        #expect(fresh.succeeded, "\(fresh.message)")
        #expect(fresh.lanes == 3)
        #expect(fresh.journal?.written == true)
        #expect(try SyncFixture.identical(source, temp.path + "/fresh"))
    }

    @Test func aFailingLaneFailsTheRunAndTheOthersStillCopy() async throws {
        let temp = try TemporaryDirectory("sync-lanes-fail")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        for top in ["a", "b", "c", "d"] { try SyncFixture.write(source, "\(top)/f", SyncFixture.text(100, seed: 1)) }
        // Seam: the job copying `c` fails as rsync does on an I/O error, and says which file it was.
        let wrapper = temp.path + "/rsync-failing-on-c"
        try SyncFixture.script(
            wrapper,
            """
            case " $* " in
              *" \(source)/c/ "*)
                echo 'rsync: [sender] read errors mapping "\(source)/c/f": Input/output error (5)' >&2
                exit 23 ;;
            esac
            exec rsync "$@"
            """)
        var engine = SyncFixture.engine(executable: wrapper)
        engine.copyLanes = 4
        let report = try await engine.run(SyncSpec(source: source, destination: destination))
        #expect(report.lanes == 4)
        #expect(report.exitCode == 23)
        #expect(report.severity == .failure)
        #expect(report.failedFiles.map(\.path) == ["\(source)/c/f"], "\(report.failedFiles)")
        for top in ["a", "b", "d"] { #expect(FileManager.default.fileExists(atPath: "\(destination)/\(top)/f")) }
    }

    @Test func aRefusedPrecheckStartsNoLaneAndCopiesNothing() async throws {
        let temp = try TemporaryDirectory("sync-lanes-refused")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"  // one level: a lane released by mistake would create it
        for top in ["a", "b", "c"] { try SyncFixture.write(source, "\(top)/f", SyncFixture.text(1000, seed: 1)) }
        let log = temp.path + "/starts"
        let wrapper = temp.path + "/rsync-logged"
        try SyncFixture.script(wrapper, "echo \"$*\" >> '\(log)'\nexec rsync \"$@\"")
        var engine = SyncFixture.engine(executable: wrapper)
        engine.copyLanes = 3
        engine.spaceMargin = 1e12  // no filesystem has room for that
        let refused = await #expect(throws: MusterError.self) {
            try await engine.run(SyncSpec(source: source, destination: destination))
        }
        #expect(refused?.code == .invalidInput)
        #expect(refused?.message.contains("not enough space") == true, "\(String(describing: refused))")
        // The jobs start only after the precheck: no rsync but `--version` (the journal's fingerprint) ran.
        let starts = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(starts.split(separator: "\n").allSatisfy { $0 == "--version" }, "\(starts)")
        #expect(!FileManager.default.fileExists(atPath: temp.path + "/dst"))
    }

    @Test func jobsAreDirectoriesAloneHeaviestFirstWithHardLinksAndOddNamesTogether() {
        func top(_ name: [UInt8], directory: Bool = true, linked: Bool = false, weight: UInt64) -> SyncEngine.WalkedTop
        {
            SyncEngine.WalkedTop(name: name, isDirectory: directory, hardLinked: linked, weight: weight, entries: 2)
        }
        let tops = [
            top(Array("small".utf8), weight: 10), top(Array("big".utf8), weight: 100),
            top(Array("linked".utf8), linked: true, weight: 5), top(Array("README".utf8), directory: false, weight: 1),
            top([0x6f, 0xff], weight: 20), top(Array("mid".utf8), weight: 50),
            top(Array("linked-file".utf8), directory: false, linked: true, weight: 3),
        ]
        let jobs = SyncEngine.laneJobs(tops, hasExcludes: false)
        #expect(
            jobs.map { $0.names.map { String(decoding: $0, as: UTF8.self) } } == [
                ["big"], ["mid"], ["linked", "README", "o\u{fffd}", "linked-file"], ["small"],
            ])
        #expect(jobs.map(\.alone) == [true, true, false, true])
        #expect(jobs.map(\.weight) == [100, 50, 29, 10])
        #expect(jobs.map(\.entries) == [2, 2, 8, 2])
        // With excludes every entry goes through --files-from on its own (hard-linked ones still together).
        let excluded = SyncEngine.laneJobs(tops, hasExcludes: true)
        #expect(excluded.allSatisfy { !$0.alone })
        #expect(excluded.map(\.names.count) == [1, 1, 1, 1, 2, 1])
        #expect(excluded.first { $0.names.count == 2 }?.names == [Array("linked".utf8), Array("linked-file".utf8)])
    }

    @Test func theCommandRefusesABadLaneCount() throws {
        for bad in ["0", "17", "x"] {
            #expect(throws: (any Error).self) { try SyncCommand.parse(["/src", "/dst", "--lanes", bad]) }
        }
        #expect(try SyncCommand.parse(["/src", "/dst", "--lanes", "16"]).lanes == 16)
        #expect(try SyncCommand.parse(["/src", "/dst"]).lanes == SyncEngine.defaultCopyLanes)
    }
}
