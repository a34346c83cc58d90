import Foundation
import Synchronization
import Testing

@testable import Agent

/// Records captured from rsync 3.2/3.5 with `--info=progress2 --no-inc-recursive --no-h`.
@Suite struct RsyncProgressTests {
    @Test func parsesAMidTransferRecord() throws {
        let progress = try #require(
            RsyncProgress.parse("       43500000  93%  942.13MB/s    0:00:00 (xfr#26, to-chk=4/31)"))
        #expect(progress.bytes == 43_500_000)
        #expect(progress.percent == 93)
        #expect(abs(progress.bytesPerSecond - 942.13 * 1_048_576) < 1)
        #expect(progress.seconds == 0)
        #expect(progress.transferredFiles == 26)
        #expect(progress.remainingToCheck == 4)
        #expect(progress.totalToCheck == 31)
        #expect(progress.checkedFiles == 27)
        #expect(!progress.isComplete)
    }

    @Test func parsesTheFinalRecordWithElapsedTime() throws {
        let progress = try #require(
            RsyncProgress.parse("      300000000 100%   97.60MB/s    0:00:02 (xfr#1, to-chk=0/1)"))
        #expect(progress.isComplete)
        #expect(progress.seconds == 2)
        #expect(progress.percent == 100)
    }

    @Test func parsesTheFirstRecordWithoutFileCounts() throws {
        let progress = try #require(RsyncProgress.parse("          32768   0%    0.00kB/s    0:00:00  "))
        #expect(progress.bytes == 32768)
        #expect(progress.bytesPerSecond == 0)
        #expect(progress.transferredFiles == nil)
        #expect(progress.totalToCheck == nil)
        #expect(!progress.isComplete)
    }

    @Test func parsesUnknownEtaHoursAndOtherUnits() throws {
        let unknown = try #require(RsyncProgress.parse("  1024   0%    0.00kB/s    ??:??:??  (xfr#0, to-chk=10/11)"))
        #expect(unknown.seconds == nil)
        let long = try #require(RsyncProgress.parse(" 5000000000  12%    1.50GB/s  102:03:04 (xfr#9, ir-chk=100/200)"))
        #expect(long.seconds == 102 * 3600 + 3 * 60 + 4)
        #expect(long.bytesPerSecond == 1.5 * 1_073_741_824)
        #expect(long.remainingToCheck == 100)
        let bytes = try #require(RsyncProgress.parse("  10  50%  512B/s  0:00:01"))
        #expect(bytes.bytesPerSecond == 512)
    }

    @Test(arguments: [
        "", "sent 549 bytes  received 12 bytes  1122.00 bytes/sec", "Number of files: 31 (reg: 30, dir: 1)",
        "total size is 46500000  speedup is 82887.70", "  12  101%  1.00kB/s  0:00:00",
        "  12  10%  fast  0:00:00", "  12  10%  1.00kB/s  0:00", "  12  10%  1.00kB/s  0:00:00 (xfr#x, to-chk=1/2)",
        "  12  10%  1.00kB/s  0:00:00 (xfr#1, to-chk=1)", "  -12  10%  1.00kB/s  0:00:00",
        "file has vanished: \"/src/a  b\"",
    ])
    func rejectsLinesThatAreNotProgress(_ line: String) {
        #expect(RsyncProgress.parse(line) == nil)
    }

    @Test func splitterCutsAtCarriageReturnsAcrossBuffers() {
        var splitter = RsyncOutputSplitter()
        let stream = Array("\r   100  10%  1.00kB/s  0:00:01 (xfr#1, to-chk=9/10)\r   200  20%".utf8)
        var records = splitter.feed(stream[0..<20])
        records += splitter.feed(stream[20...])
        records += splitter.feed(Array("  1.00kB/s  0:00:01 (xfr#2, to-chk=8/10)\n\nNumber of files: 10\n".utf8))
        #expect(
            records == [
                "   100  10%  1.00kB/s  0:00:01 (xfr#1, to-chk=9/10)",
                "   200  20%  1.00kB/s  0:00:01 (xfr#2, to-chk=8/10)",
                "Number of files: 10",
            ])
        #expect(splitter.finish() == nil)
        _ = splitter.feed(Array("tail".utf8))
        #expect(splitter.finish() == "tail")
    }

    @Test func splitterBoundsRecordLength() {
        var splitter = RsyncOutputSplitter(maximumRecordLength: 8)
        let records = splitter.feed(Array("0123456789abcdef".utf8))
        #expect(records == ["01234567", "89abcdef"])
    }

    @Test func progressRecordsAreCountedAndOnlyTheNewestIsParsed() {
        let delivered = Mutex<[RsyncProgress]>([])
        let throttle = ProgressThrottle(interval: .zero) { progress in delivered.withLock { $0.append(progress) } }
        var streams = Rsync.Streams()
        streams.absorbStdout(["         100   1%    1.00MB/s    0:00:09 (xfr#1, to-chk=9/10)"], throttle: throttle)
        // The first one is parsed at once; the next ones within 50 ms are only counted and kept.
        #expect(delivered.withLock { $0.map(\.bytes) } == [100])
        streams.absorbStdout(
            [
                "         200   2%    1.00MB/s    0:00:08 (xfr#2, to-chk=8/10)",
                "Number of files: 10 (reg: 9, dir: 1)",
                "         300   3%    1.00MB/s    0:00:07 (xfr#3, to-chk=7/10)",
                "something rsync said",
            ], throttle: throttle)
        streams.absorbStdout(["        1000 100%    1.00MB/s    0:00:01 (xfr#9, to-chk=0/10)"], throttle: throttle)
        #expect(streams.progressRecords == 4)
        #expect(streams.stats.files == 10)
        #expect(streams.other == ["something rsync said"])
        // At the end of the stream the newest record is parsed and delivered: the final one is never lost.
        streams.finishStdout(throttle: throttle)
        #expect(delivered.withLock { $0.last?.bytes } == 1000)
        #expect(delivered.withLock { $0.last?.isComplete } == true)
        #expect(!delivered.withLock { $0.map(\.bytes) }.contains(200))
        // A kept record that does not parse is moved to the other output and not counted.
        streams.absorbStdout(["       9999 not a progress record"], throttle: throttle)
        streams.finishStdout(throttle: throttle)
        #expect(streams.progressRecords == 4)
        #expect(streams.other.last == "       9999 not a progress record")
    }

    @Test func statsBlockIsParsed() {
        var stats = RsyncStats()
        let lines = [
            "Number of files: 31 (reg: 30, dir: 1)", "Number of created files: 2", "Number of deleted files: 0",
            "Number of regular files transferred: 1,234", "Total file size: 46500000 bytes",
            "Total transferred file size: 0 bytes", "Literal data: 17 bytes", "File list size: 0",
            "sent 549 bytes  received 12 bytes  1122.00 bytes/sec",
        ]
        for line in lines { stats.absorb(line) }
        #expect(stats.files == 31)
        #expect(stats.createdFiles == 2)
        #expect(stats.transferredFiles == 1234)
        #expect(stats.totalFileBytes == 46_500_000)
        #expect(stats.transferredFileBytes == 0)
        #expect(stats.literalBytes == 17)
        let absorbed = stats.absorb("sent 549 bytes  received 12 bytes  1122.00 bytes/sec")
        #expect(!absorbed)
    }
}

@Suite struct RsyncExitStatusTests {
    @Test func partialTransferListsTheFailedFiles() {
        let status = RsyncExitStatus(
            code: 23,
            stderrLines: [
                "rsync: [sender] send_files failed to open \"/src/secret file\": Permission denied (13)",
                "rsync: [sender] opendir \"/src/locked\" failed: Permission denied (13)",
                "rsync: [sender] send_files failed to open \"/src/new\\#012line\": Permission denied (13)",
                "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338) [sender=3.2.7]",
            ])
        #expect(status.severity == .failure)
        #expect(
            status.failedFiles == [
                .init(path: "/src/secret file", reason: "Permission denied (13)"),
                .init(path: "/src/locked", reason: "Permission denied (13)"),
                .init(path: "/src/new\\#012line", reason: "Permission denied (13)"),
            ])
        #expect(status.failedFiles[2].pathBytes == Array("/src/new\nline".utf8))
        let message = status.message()
        #expect(message.contains("rsync exited with 23: partial transfer due to error"))
        #expect(message.contains("/src/secret file: Permission denied (13)"))
        #expect(status.hint?.contains("re-run") == true)
    }

    @Test func vanishedFilesAreAWarning() {
        let status = RsyncExitStatus(
            code: 24,
            stderrLines: [
                "file has vanished: \"/src/z-001\"",
                "rsync warning: some files vanished before they could be transferred (code 24) at main.c(1330) [sender=3.5.0]",
            ])
        #expect(status.severity == .warning)
        #expect(status.vanishedFiles == ["/src/z-001"])
        #expect(status.failedFiles.isEmpty)
        #expect(status.message().contains("vanished"))
    }

    @Test func fullDestinationIsRecognised() {
        let status = RsyncExitStatus(
            code: 11,
            stderrLines: [
                "rsync: [receiver] write failed on \"/dst/big\": No space left on device (28)",
                "rsync error: error in file I/O (code 11) at receiver.c(381) [receiver=3.5.0]",
            ])
        #expect(status.destinationFull)
        #expect(status.message().contains("error in file I/O"))
        #expect(status.message().contains("ran out of space"))
        #expect(status.hint?.contains("free space") == true)
    }

    @Test(
        arguments: [
            0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 25, 30, 35, 124, 125, 126, 127,
        ] as [Int32])
    func everyDocumentedCodeHasItsOwnMeaning(_ code: Int32) {
        let meaning = RsyncExitStatus(code: code, stderrLines: []).meaning
        #expect(!meaning.hasPrefix("unknown"))
        #expect(
            RsyncExitStatus(code: code, stderrLines: []).severity
                == (code == 0 ? .success : code == 24 ? .warning : .failure))
    }

    @Test func signalsAndUnknownCodes() {
        #expect(RsyncExitStatus(code: 137, stderrLines: []).meaning == "rsync was killed by signal 9")
        #expect(RsyncExitStatus(code: 99, stderrLines: []).meaning == "unknown rsync exit code 99")
    }
}

@Suite struct SyncSpecTests {
    @Test(arguments: [
        ("relative/src", "/dst"), ("/src", "dst"), ("/src/../etc", "/dst"), ("/src", "/dst/.."), ("/data", "/data/"),
        ("/data", "/data/copy"), ("/data/copy", "/data"),
    ])
    func rejectsBadPaths(_ source: String, _ destination: String) {
        #expect(throws: (any Error).self) { try SyncSpec(source: source, destination: destination).validate() }
    }

    @Test func acceptsSiblingsAndBuildsTheArgv() throws {
        let spec = SyncSpec(
            source: "/data/src/", destination: "/data/src-copy", delete: true, excludes: [".git/", "*.tmp"])
        try spec.validate()
        #expect(
            Rsync.arguments(for: spec, dryRun: false) == [
                "-aHAX", "--numeric-ids", "--partial", "--info=progress2", "--no-inc-recursive", "--no-h", "--stats",
                "--delete", "--exclude=.git/", "--exclude=*.tmp", "/data/src/", "/data/src-copy/",
            ])
        let plain = Rsync.arguments(for: SyncSpec(source: "/a", destination: "/b"), dryRun: true)
        #expect(!plain.contains("--delete"))
        #expect(plain.contains("--dry-run"))
        #expect(!plain.contains("--remove-source-files"))
    }

    @Test func excludeMatcherFollowsRsyncBasics() {
        let matcher = ExcludeMatcher(["*.tmp", "/build/", "docs/*.md", "cache"])
        #expect(matcher.excludes(Array("a/b/x.tmp".utf8), isDirectory: false))
        #expect(matcher.excludes(Array("build".utf8), isDirectory: true))
        #expect(!matcher.excludes(Array("build".utf8), isDirectory: false))
        #expect(!matcher.excludes(Array("src/build".utf8), isDirectory: true))
        #expect(matcher.excludes(Array("x/docs/readme.md".utf8), isDirectory: false))
        #expect(!matcher.excludes(Array("x/docs/sub/readme.md".utf8), isDirectory: false))
        #expect(matcher.excludes(Array("deep/cache".utf8), isDirectory: true))
        #expect(!matcher.excludes(Array("src/main.swift".utf8), isDirectory: false))
    }

    @Test func specRoundTripsThroughJSON() throws {
        let spec = SyncSpec(source: "/a", destination: "/b", delete: true, excludes: ["x"], verify: .sample)
        let data = try JSONEncoder().encode(spec)
        #expect(try JSONDecoder().decode(SyncSpec.self, from: data) == spec)
    }
}
