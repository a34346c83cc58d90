import Foundation
import Logging
import Synchronization
import Testing

@testable import Agent

#if canImport(Glibc)
    import Glibc
#endif

/// Builds source trees for the sync tests with raw-byte names, and inspects trees with tools independent of
/// the code under test (`find`, `diff`, `tar`, `stat`).
enum SyncFixture {
    /// Writes `content` to `root/relative` (raw bytes, parents created), mode `mode`.
    static func write(_ root: String, _ relative: [UInt8], _ content: [UInt8], mode: mode_t = 0o644) throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        // Parents component by component with raw bytes (FileManager would re-encode non-UTF-8 names).
        var parent: [UInt8] = []
        for component in relative.split(separator: UInt8(ascii: "/")).dropLast() {
            parent += parent.isEmpty ? Array(component) : [UInt8(ascii: "/")] + component
            let made = TreeWalker.withCString(TreeWalker.cPath(root: root, relative: parent)) { mkdir($0, 0o755) }
            guard made == 0 || errno == EEXIST else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        }
        let path = TreeWalker.cPath(root: root, relative: relative)
        let fd = TreeWalker.withCString(path) { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var offset = 0
        while offset < content.count {
            let written = content[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard written > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            offset += written
        }
        guard fchmod(fd, mode) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    static func write(_ root: String, _ relative: String, _ content: [UInt8], mode: mode_t = 0o644) throws {
        try write(root, Array(relative.utf8), content, mode: mode)
    }

    /// Deterministic pseudo-random bytes (SplitMix64), incompressible like the benchmark's binaries.
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        var out = [UInt8]()
        out.reserveCapacity(count + 8)
        while out.count < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            withUnsafeBytes(of: z) { out.append(contentsOf: $0) }
        }
        return Array(out.prefix(count))
    }

    /// Source-like text of `count` bytes.
    static func text(_ count: Int, seed: UInt64) -> [UInt8] {
        let words = Array("func let var return struct class import sync agent node task golden repo\n".utf8)
        return bytes(count, seed: seed).map { words[Int($0) % words.count] }
    }

    /// `find -printf` of every entry below `root`: path, type, mode, numeric owner, size (files), link target.
    /// Independent of ``TreeWalker``; names are NUL-separated so newlines survive.
    static func listing(_ root: String) throws -> [String] {
        let output = try runCommand(
            "/usr/bin/find", [root, "-mindepth", "1", "-printf", "%P|%y|%m|%U:%G|%s|%l|%n\\0"])
        #expect(output.status == 0, "find failed: \(output.stderr)")
        return output.stdout.split(separator: "\0").map { line in
            // Directory sizes depend on the filesystem; drop them.
            var fields = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            if fields.count > 4, fields[1] == "d" { fields[4] = "-" }
            return fields.joined(separator: "|")
        }.sorted()
    }

    /// `diff -r --no-dereference A B`: byte equality of every file, same names, same symlink targets.
    static func identical(_ a: String, _ b: String) throws -> Bool {
        let output = try runCommand("/usr/bin/diff", ["-r", "--no-dereference", a, b])
        if output.status != 0 { Issue.record("diff: \(output.stdout.prefix(2000)) \(output.stderr.prefix(500))") }
        return output.status == 0
    }

    /// sha256 of a sorted tar of the tree (names, modes, owners, mtimes, xattrs, contents): any change to the
    /// source shows up here.
    static func fingerprint(_ root: String) throws -> String {
        let output = try runCommand(
            "/bin/sh",
            [
                "-c",
                "tar --sort=name --numeric-owner --xattrs --xattrs-include='*' --pax-option=delete=atime,delete=ctime -cf - -C \"$1\" . | sha256sum",
                "sh", root,
            ])
        #expect(output.status == 0, "tar failed: \(output.stderr)")
        return output.stdout
    }

    /// The engine as the tests use it: `rsync` from PATH unless `executable` is given, fast progress.
    static func engine(executable: String = "rsync", credentials: Rsync.Credentials? = nil) -> SyncEngine {
        var logger = Logger(label: "sync-tests")
        logger.logLevel = .warning
        return SyncEngine(
            rsync: Rsync(executable: executable, credentials: credentials), progressInterval: .milliseconds(100),
            logger: logger)
    }

    /// Sets a user xattr (Python's `os.setxattr`; glibc's `setxattr` is not in Swift's Glibc module).
    static func setXattr(_ path: String, _ name: String, _ value: String) throws {
        let output = try runCommand(
            "/usr/bin/python3",
            ["-c", "import os, sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode())", path, name, value])
        #expect(output.status == 0, "setxattr: \(output.stderr)")
    }

    /// Reads an xattr, `nil` when it is missing.
    static func xattr(_ path: String, _ name: String) throws -> String? {
        let output = try runCommand(
            "/usr/bin/python3",
            ["-c", "import os, sys; sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())", path, name])
        return output.status == 0 ? output.stdout : nil
    }

    /// Writes an executable shell script.
    static func script(_ path: String, _ body: String) throws {
        try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        guard chmod(path, 0o755) == 0 else { throw POSIXError(.EPERM) }
    }
}

/// Collects engine events from the reader tasks.
final class EventLog: Sendable {
    private let events = Mutex<[SyncEngine.Event]>([])
    private let hook: (@Sendable (SyncEngine.Event) -> Void)?

    init(hook: (@Sendable (SyncEngine.Event) -> Void)? = nil) { self.hook = hook }

    func record(_ event: SyncEngine.Event) {
        events.withLock { $0.append(event) }
        hook?(event)
    }

    var progress: [RsyncProgress] {
        events.withLock { events in
            events.compactMap {
                if case .progress(let progress) = $0 { return progress }
                return nil
            }
        }
    }
}

/// True after the first ``setFirst()``; for callbacks that must act once.
final class OnceFlag: Sendable {
    private let state = Mutex(false)

    /// Sets the flag; returns whether this call was the one that set it.
    func setFirst() -> Bool {
        state.withLock { done in
            defer { done = true }
            return !done
        }
    }

    var isSet: Bool { state.withLock { $0 } }
}
