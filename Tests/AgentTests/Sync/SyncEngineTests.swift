import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Agent

/// The sync engine against real rsync on real trees. Serialized: the trees are large enough that running them
/// in parallel on two cores only adds noise.
@Suite(.serialized) struct SyncEngineTests {
    // MARK: - Copying

    @Test func copiesManySmallAndBigFilesByteForByteAndNeverTouchesTheSource() async throws {
        let temp = try TemporaryDirectory("sync-copy")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst/nested"
        for index in 0..<1500 {
            try SyncFixture.write(
                source, "pkg\(index % 30)/mod\(index % 7)/f\(index).swift",
                SyncFixture.text(150 + index * 7 % 9000, seed: UInt64(index)))
        }
        try SyncFixture.write(source, "assets/blob0.bin", SyncFixture.bytes(24 << 20, seed: 1))
        try SyncFixture.write(source, "assets/blob1.bin", SyncFixture.bytes(8 << 20, seed: 2))
        try SyncFixture.write(source, "empty", [])
        let before = try SyncFixture.fingerprint(source)

        let events = EventLog()
        let report = try await SyncFixture.engine().run(
            SyncSpec(source: source, destination: destination, verify: .full), onEvent: events.record)

        #expect(report.succeeded, "\(report.message)")
        #expect(report.exitCode == 0)
        #expect(report.stats.transferredFiles == 1503)
        #expect(report.verification?.filesHashed == 1503)
        #expect(report.verification?.mismatch == nil)
        #expect(try SyncFixture.identical(source, destination))
        #expect(try SyncFixture.listing(source) == SyncFixture.listing(destination))
        #expect(try SyncFixture.fingerprint(source) == before)
        let last = try #require(events.progress.last)
        #expect(last.isComplete)
        #expect(last.transferredFiles == 1503)
        #expect(last.bytes == report.stats.transferredFileBytes)
        #expect(report.precheck.sourceBytes >= (32 << 20))
    }

    @Test func reRunCopiesNothingAndOnePercentChangedCopiesOnlyThose() async throws {
        let temp = try TemporaryDirectory("sync-rerun")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        for index in 0..<1000 {
            try SyncFixture.write(
                source, "d\(index % 20)/f\(index).txt", SyncFixture.text(200 + index % 3000, seed: UInt64(index)))
        }
        let engine = SyncFixture.engine()
        let spec = SyncSpec(source: source, destination: destination)
        let first = try await engine.run(spec)
        #expect(first.stats.transferredFiles == 1000)

        let again = EventLog()
        let second = try await engine.run(spec, onEvent: again.record)
        #expect(second.succeeded)
        #expect(second.stats.transferredFiles == 0)
        #expect(second.stats.transferredFileBytes == 0)
        #expect(again.progress.last?.transferredFiles == 0)
        #expect(again.progress.last?.isComplete == true)

        // 1% of the files: new content (and a new mtime), some with a new size.
        let changed = stride(from: 0, to: 1000, by: 100).map { $0 + 3 }
        for index in changed {
            try SyncFixture.write(
                source, "d\(index % 20)/f\(index).txt",
                SyncFixture.text(300 + index % 3000, seed: 99_000 + UInt64(index)))
        }
        let before = try SyncFixture.fingerprint(source)
        let third = try await engine.run(SyncSpec(source: source, destination: destination, verify: .sample))
        #expect(third.succeeded, "\(third.message)")
        #expect(third.stats.transferredFiles == changed.count)
        #expect(third.lastProgress?.transferredFiles == changed.count)
        #expect(try SyncFixture.identical(source, destination))
        #expect(try SyncFixture.fingerprint(source) == before)
    }

    @Test(.requiresRoot) func preservesHardLinksXattrsModesAndNumericOwners() async throws {
        let temp = try TemporaryDirectory("sync-meta")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        try SyncFixture.write(source, "bin/tool", SyncFixture.text(4000, seed: 1), mode: 0o4751)
        try SyncFixture.write(source, "secret/key", SyncFixture.text(64, seed: 2), mode: 0o600)
        try SyncFixture.write(source, "shared/data", SyncFixture.bytes(100_000, seed: 3))
        #expect(link(source + "/shared/data", source + "/shared/data-link") == 0)
        #expect(link(source + "/shared/data", source + "/bin/data-link2") == 0)
        #expect(chmod(source + "/secret", 0o700) == 0)
        #expect(lchown(source + "/secret/key", 12345, 54321) == 0)
        #expect(lchown(source + "/bin", 777, 888) == 0)
        #expect(symlink("../shared/data", source + "/bin/data-symlink") == 0)
        #expect(lchown(source + "/bin/data-symlink", 4242, 4343) == 0)
        try SyncFixture.setXattr(source + "/shared/data", "user.muster.origin", "golden")
        try SyncFixture.setXattr(source + "/secret", "user.muster.dir", "golden")
        let before = try SyncFixture.fingerprint(source)

        let report = try await SyncFixture.engine().run(
            SyncSpec(source: source, destination: destination, verify: .sample))
        #expect(report.succeeded, "\(report.message)")
        #expect(report.verification?.mismatch == nil)
        #expect(try SyncFixture.listing(source) == SyncFixture.listing(destination))
        #expect(try SyncFixture.identical(source, destination))

        let inodes = try runCommand(
            "/usr/bin/stat",
            [
                "-c", "%i", destination + "/shared/data", destination + "/shared/data-link",
                destination + "/bin/data-link2",
            ])
        let numbers = inodes.stdout.split(separator: "\n")
        #expect(numbers.count == 3 && Set(numbers).count == 1, "hard links not preserved: \(inodes.stdout)")
        let owners = try runCommand(
            "/usr/bin/stat", ["-c", "%u:%g %a", destination + "/secret/key", destination + "/bin/tool"])
        #expect(owners.stdout == "12345:54321 600\n0:0 4751\n")
        let directory = try runCommand(
            "/usr/bin/stat", ["-c", "%u:%g %a", destination + "/bin", destination + "/secret"])
        #expect(directory.stdout == "777:888 755\n0:0 700\n")
        let linkOwner = try runCommand("/usr/bin/stat", ["-c", "%u:%g", destination + "/bin/data-symlink"])
        #expect(linkOwner.stdout == "4242:4343\n")
        for (path, name) in [
            (destination + "/shared/data", "user.muster.origin"), (destination + "/secret", "user.muster.dir"),
        ] {
            #expect(try SyncFixture.xattr(path, name) == "golden", "xattr \(name) on \(path)")
        }
        #expect(try SyncFixture.fingerprint(source) == before)
    }

    @Test func namesWithSpacesNewlinesAndNonUTF8BytesSurvive() async throws {
        let temp = try TemporaryDirectory("sync-names")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        let names: [[UInt8]] = [
            Array("with space.txt".utf8), Array("new\nline".utf8), [0x6E, 0xFF, 0xFE, 0x2E, 0x62, 0x69, 0x6E],
            Array("tab\there".utf8), Array("quote\"s and 'single'".utf8), Array("-starts-with-dash".utf8),
            Array("dir with space/and\nnewline/\u{00E9}t\u{00E9}-\u{1F600}".utf8), [0x64, 0x80, 0x2F, 0x66, 0xC3],
            Array("back\\slash\\#012".utf8),
        ]
        for (index, name) in names.enumerated() {
            try SyncFixture.write(source, name, SyncFixture.text(100 + index, seed: UInt64(index)))
        }
        let before = try SyncFixture.fingerprint(source)
        let report = try await SyncFixture.engine().run(
            SyncSpec(source: source, destination: destination, verify: .full))
        #expect(report.succeeded, "\(report.message)")
        #expect(report.verification?.filesHashed == names.count)
        #expect(report.verification?.mismatch == nil)
        #expect(try SyncFixture.identical(source, destination))
        #expect(try SyncFixture.listing(source) == SyncFixture.listing(destination))
        for name in names {
            let path = TreeWalker.cPath(root: destination, relative: name)
            let fd = TreeWalker.withCString(path) { open($0, O_RDONLY) }
            #expect(fd >= 0, "missing \(TreeWalker.display(name))")
            if fd >= 0 { close(fd) }
        }
        #expect(try SyncFixture.fingerprint(source) == before)
    }

    @Test func symlinkLoopsAreCopiedAsSymlinks() async throws {
        let temp = try TemporaryDirectory("sync-loop")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        try SyncFixture.write(source, "dir/file", SyncFixture.text(10, seed: 1))
        #expect(symlink("loop-b", source + "/loop-a") == 0)
        #expect(symlink("loop-a", source + "/loop-b") == 0)
        #expect(symlink(".", source + "/self") == 0)
        #expect(symlink("..", source + "/dir/up") == 0)
        #expect(symlink("/nonexistent/target", source + "/dangling") == 0)
        let report = try await SyncFixture.engine().run(
            SyncSpec(source: source, destination: destination, verify: .sample))
        #expect(report.succeeded, "\(report.message)")
        #expect(report.verification?.mismatch == nil)
        for (name, target) in [
            ("loop-a", "loop-b"), ("loop-b", "loop-a"), ("self", "."), ("dir/up", ".."),
            ("dangling", "/nonexistent/target"),
        ] {
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: destination + "/" + name) == target)
        }
        #expect(try SyncFixture.listing(source) == SyncFixture.listing(destination))
    }

    @Test func deleteOnlyWhenAskedAndExcludesAreHonoured() async throws {
        let temp = try TemporaryDirectory("sync-delete")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        try SyncFixture.write(source, "keep.txt", SyncFixture.text(10, seed: 1))
        try SyncFixture.write(source, "build/out.o", SyncFixture.text(10, seed: 2))
        try SyncFixture.write(source, "notes.tmp", SyncFixture.text(10, seed: 3))
        try SyncFixture.write(destination, "stale.txt", SyncFixture.text(10, seed: 4))
        let engine = SyncFixture.engine()
        let excludes = ["/build/", "*.tmp"]
        let plain = try await engine.run(
            SyncSpec(source: source, destination: destination, excludes: excludes, verify: .full))
        #expect(plain.succeeded, "\(plain.message)")
        #expect(plain.verification?.mismatch == nil)
        #expect(FileManager.default.fileExists(atPath: destination + "/stale.txt"))
        #expect(!FileManager.default.fileExists(atPath: destination + "/build"))
        #expect(!FileManager.default.fileExists(atPath: destination + "/notes.tmp"))

        let deleting = try await engine.run(
            SyncSpec(source: source, destination: destination, delete: true, excludes: excludes, verify: .full))
        #expect(deleting.succeeded, "\(deleting.message)")
        #expect(deleting.verification?.mismatch == nil)
        #expect(!FileManager.default.fileExists(atPath: destination + "/stale.txt"))
        #expect(FileManager.default.fileExists(atPath: source + "/notes.tmp"))
    }

    // MARK: - Verification

    @Test func verificationReportsTheFirstDifference() async throws {
        let temp = try TemporaryDirectory("sync-verify")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        for index in 0..<50 { try SyncFixture.write(source, "f\(index)", SyncFixture.bytes(4096, seed: UInt64(index))) }
        let copy = try await SyncFixture.engine().run(SyncSpec(source: source, destination: destination))
        #expect(copy.succeeded)

        // Same size, one byte different: only a content hash sees it.
        try SyncFixture.write(destination, "f17", SyncFixture.bytes(4095, seed: 17) + [0])
        let full = try SyncVerifier(spec: SyncSpec(source: source, destination: destination, verify: .full)).verify()
        #expect(full.mismatch == .init(path: "f17", problem: "content differs (sha256)"))

        #expect(chmod(destination + "/f3", 0o600) == 0)
        let modes = try SyncVerifier(spec: SyncSpec(source: source, destination: destination, verify: .none)).verify()
        #expect(modes.mismatch == .init(path: "f3", problem: "mode 644 in the source, 600 in the destination"))

        try FileManager.default.removeItem(atPath: destination + "/f10")
        let missing = try SyncVerifier(spec: SyncSpec(source: source, destination: destination, verify: .sample))
            .verify()
        #expect(missing.mismatch == .init(path: "f10", problem: "missing in the destination"))
    }

    @Test func sampleIsDeterministicAndIncludesTheLargestFiles() {
        let entries = (0..<1000).map { index in
            TreeEntry(
                path: Array("f\(index)".utf8), kind: .regular, permissions: 0o644,
                size: UInt64(index == 777 ? 1 << 30 : 10),
                userID: 0, groupID: 0, device: 1, inode: UInt64(index), linkCount: 1, symlinkTarget: nil)
        }
        let sample = SyncVerifier.filesToHash(entries, mode: .sample)
        #expect(sample == SyncVerifier.filesToHash(entries, mode: .sample))
        #expect(sample.contains { $0.path == Array("f777".utf8) })
        #expect(sample.count >= 250 && sample.count <= 260)
        #expect(SyncVerifier.filesToHash(entries, mode: .full).count == 1000)
        #expect(SyncVerifier.filesToHash(entries, mode: .none).isEmpty)
    }

    // MARK: - Failures

    @Test func precheckRefusesASourceClearlyTooBig() async throws {
        let temp = try TemporaryDirectory("sync-precheck")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        try SyncFixture.write(source, "small", [1, 2, 3])
        // A sparse file of 8 TiB apparent size: far more than any test machine has free.
        let fd = open(source + "/huge.img", O_WRONLY | O_CREAT, 0o644)
        #expect(fd >= 0)
        #expect(ftruncate(fd, 8 << 40) == 0)
        close(fd)
        let error = await #expect(throws: MusterError.self) {
            try await SyncFixture.engine().run(SyncSpec(source: source, destination: destination))
        }
        #expect(error?.code == .invalidInput)
        #expect(error?.message.contains("not enough space at '\(destination)'") == true)
        #expect(error?.message.contains("10% margin") == true)
        #expect(!FileManager.default.fileExists(atPath: destination), "nothing may be written after a refusal")
    }

    @Test func precheckCountsBlocksHardLinksOnceAndHonoursExcludes() async throws {
        let temp = try TemporaryDirectory("sync-size")
        defer { temp.remove() }
        let source = temp.path + "/src"
        try SyncFixture.write(source, "a", [1])
        try SyncFixture.write(source, "dir/b", SyncFixture.bytes(4096, seed: 1))
        try SyncFixture.write(source, "dir/sub/c", SyncFixture.bytes(4097, seed: 2))
        #expect(link(source + "/dir/b", source + "/dir/b2") == 0)
        #expect(symlink("a", source + "/s") == 0)
        try SyncFixture.write(source, "skip/big", SyncFixture.bytes(100_000, seed: 3))
        try SyncFixture.write(source, "x.tmp", [1, 2])
        let spec = SyncSpec(source: source, destination: temp.path + "/dst", excludes: ["/skip/", "*.tmp"])
        let check = try await SyncFixture.engine().precheck(spec)
        // a: 4 KiB, b (+ its hard link b2, once): 4 KiB, c: 8 KiB, directories dir and dir/sub: 4 KiB each.
        #expect(check.sourceBytes == 24576)
        #expect(check.sourceEntries == 7)
        #expect(check.requiredBytes == 27034)
        #expect(check.fits)
    }

    @Test func vanishingSourceFilesAreAWarning() async throws {
        let temp = try TemporaryDirectory("sync-vanish")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        try SyncFixture.write(source, "a-big.bin", SyncFixture.bytes(6 << 20, seed: 1))
        for index in 0..<20 { try SyncFixture.write(source, "z-\(index)", SyncFixture.text(100, seed: UInt64(index))) }
        // Seam: rsync slowed down with --bwlimit (3 s for the big file) so the deletion surely lands after
        // the file list is built and before the z-files are sent.
        let wrapper = temp.path + "/slow-rsync"
        try SyncFixture.script(wrapper, "exec rsync --bwlimit=2000 \"$@\"")
        let removed = OnceFlag()
        let events = EventLog { event in
            guard case .progress(let progress) = event, progress.totalToCheck != nil || progress.bytes > 0 else {
                return
            }
            guard removed.setFirst() else { return }
            for index in 0..<20 { unlink(source + "/z-\(index)") }
        }
        // One rsync: the deletion must land between its file list and its copy (lanes: SyncLanesTests).
        var engine = SyncFixture.engine(executable: wrapper)
        engine.copyLanes = 1
        let report = try await engine.run(SyncSpec(source: source, destination: destination), onEvent: events.record)
        #expect(removed.isSet)
        #expect(report.exitCode == 24)
        #expect(report.severity == .warning)
        #expect(report.succeeded)
        #expect(report.error == nil)
        #expect(report.vanishedFiles.count == 20)
        #expect(report.vanishedFiles.allSatisfy { $0.hasPrefix("z-") || $0.contains("/z-") })
        #expect(report.message.contains("partial transfer due to vanished source files"))
        #expect(try SyncFixture.identical(source, destination))
    }

    @Test(.requiresRoot) func permissionDeniedFilesAreListed() async throws {
        let temp = try TemporaryDirectory("sync-denied")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        try SyncFixture.write(source, "readable.txt", SyncFixture.text(100, seed: 1))
        try SyncFixture.write(source, "secret file.txt", SyncFixture.text(100, seed: 2), mode: 0o000)
        try SyncFixture.write(source, "locked/inner.txt", SyncFixture.text(100, seed: 3))
        #expect(chmod(source + "/locked", 0o000) == 0)
        try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: true)
        #expect(chown(destination, 65534, 65534) == 0)
        let nobody = Rsync.Credentials(userID: 65534, groupID: 65534)
        let report = try await SyncFixture.engine(credentials: nobody).run(
            SyncSpec(source: source, destination: destination))
        #expect(report.exitCode == 23)
        #expect(report.severity == .failure)
        let paths = report.failedFiles.map(\.path)
        #expect(paths.contains { $0.hasSuffix("secret file.txt") }, "\(report.failedFiles)")
        #expect(paths.contains { $0.hasSuffix("locked") }, "\(report.failedFiles)")
        #expect(report.failedFiles.allSatisfy { $0.reason.contains("Permission denied") })
        let error = try #require(report.error)
        #expect(error.message.contains("partial transfer due to error"))
        #expect(error.message.contains("secret file.txt: Permission denied (13)"))
        #expect(FileManager.default.fileExists(atPath: destination + "/readable.txt"))
    }

    @Test(.requiresRoot) func destinationFullMidwayFailsCleanlyAndReRunCompletes() async throws {
        let temp = try TemporaryDirectory("sync-full")
        defer { temp.remove() }
        let source = temp.path + "/src"
        let destination = temp.path + "/dst"
        for index in 0..<3 {
            try SyncFixture.write(source, "part\(index).bin", SyncFixture.bytes(6 << 20, seed: UInt64(index)))
        }
        try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: true)

        // A private mount namespace held by `sleep`, with an 8 MiB tmpfs on the destination; rsync runs inside
        // it through a wrapper. Killing the holder removes namespace and tmpfs: nothing leaks to the host.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        holder.arguments = ["--mount", "--propagation", "private", "/bin/sleep", "600"]
        try holder.run()
        defer {
            kill(holder.processIdentifier, SIGKILL)
            holder.waitUntilExit()
        }
        let pid = holder.processIdentifier
        let ours = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/mnt")
        for _ in 0..<200 {
            if let theirs = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/mnt"),
                theirs != ours
            {
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        let enter = ["--mount=/proc/\(pid)/ns/mnt"]
        let mount = try runCommand(
            "/usr/bin/nsenter", enter + ["/bin/mount", "-t", "tmpfs", "-o", "size=8m", "muster-test", destination])
        try #require(mount.status == 0, "mount: \(mount.stderr)")
        let wrapper = temp.path + "/rsync-in-namespace"
        try SyncFixture.script(wrapper, "exec /usr/bin/nsenter --mount=/proc/\(pid)/ns/mnt rsync \"$@\"")
        let engine = SyncFixture.engine(executable: wrapper)
        let spec = SyncSpec(source: source, destination: destination)

        // The precheck sees the host filesystem (the tmpfs exists only in the holder's namespace), so this is
        // the "filled up while copying" case.
        let full = try await engine.run(spec)
        #expect(full.severity == .failure)
        #expect(full.destinationFull, "\(full.message)")
        let error = try #require(full.error)
        #expect(error.code == .io)
        #expect(error.message.contains("ran out of space (No space left on device)"))
        #expect(error.hint?.contains("free space") == true)

        let grow = try runCommand("/usr/bin/nsenter", enter + ["/bin/mount", "-o", "remount,size=64m", destination])
        try #require(grow.status == 0, "remount: \(grow.stderr)")
        let again = try await engine.run(spec)
        #expect(again.succeeded, "\(again.message)")
        let diff = try runCommand("/usr/bin/nsenter", enter + ["/usr/bin/diff", "-r", source, destination])
        #expect(diff.status == 0, "\(diff.stdout)")
    }

    // MARK: - Command

    @Test func commandMapsErrorsToDocumentedExitCodes() async throws {
        let usage = await #expect(throws: MusterError.self) {
            try await SyncFixture.engine().run(SyncSpec(source: "relative", destination: "/tmp/x"))
        }
        #expect(usage.map(SyncCommand.exitCode(for:)) == 2)
        let notADirectory = await #expect(throws: MusterError.self) {
            try await SyncFixture.engine().run(SyncSpec(source: "/proc/self/status", destination: "/tmp/muster-never"))
        }
        #expect(notADirectory.map(SyncCommand.exitCode(for:)) == 2)
        #expect(SyncCommand.exitCode(for: MusterError(.io, "disk full")) == 1)
        #expect(SyncCommand.exitCode(for: MusterError(.verificationFailed, "differs")) == 1)
    }
}
