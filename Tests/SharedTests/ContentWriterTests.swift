import Crypto
import Foundation
import Shared
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("ContentWriter: staged files made durable and moved into place together")
struct ContentWriterTests {
    static func scratch() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("muster-cw-\(UUID())").path
        for sub in ["partial", "objects"] {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true)
        }
        return dir
    }

    /// Writes `content` through a writer at `partial/NAME` and stages it.
    static func stage(_ content: String, as name: String, in dir: String) throws -> ContentWriter.Staged {
        let bytes = Array(content.utf8)
        let writer = try ContentWriter(temporaryPath: "\(dir)/partial/\(name)", resume: false)
        try bytes.withUnsafeBytes { try writer.write($0) }
        let digest = ContentDigest.hex(SHA256.hash(data: bytes))
        return try writer.seal(expectedDigest: digest, expectedSize: UInt64(bytes.count)).stage()
    }

    static func mode(_ path: String) -> mode_t? {
        var info = stat()
        return lstat(path, &info) == 0 ? info.st_mode & 0o7777 : nil
    }

    @Test("staged files stay under their temporary names, read-only, until installStaged moves them all")
    func stagedThenInstalled() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let one = try Self.stage("first object", as: "one", in: dir)
        let two = try Self.stage("second object", as: "two", in: dir)
        #expect(Self.mode(one.temporaryPath) == 0o444)
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/objects/aa/one"))

        try ContentWriter.installStaged(
            [(one, "\(dir)/objects/aa/one"), (two, "\(dir)/objects/bb/two")], syncing: "\(dir)/partial")
        #expect(FileManager.default.contents(atPath: "\(dir)/objects/aa/one") == Data("first object".utf8))
        #expect(FileManager.default.contents(atPath: "\(dir)/objects/bb/two") == Data("second object".utf8))
        #expect(Self.mode("\(dir)/objects/bb/two") == 0o444)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/partial").isEmpty)
    }

    @Test("a rename that fails deletes that file and the rest, names the path, and keeps the ones before it")
    func failedRename() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A regular file where the second file's directory should be: mkdir fails with EEXIST, rename with ENOTDIR.
        #expect(FileManager.default.createFile(atPath: "\(dir)/objects/bb", contents: Data("in the way".utf8)))
        let one = try Self.stage("first", as: "one", in: dir)
        let two = try Self.stage("second", as: "two", in: dir)
        let three = try Self.stage("third", as: "three", in: dir)
        #expect {
            try ContentWriter.installStaged(
                [(one, "\(dir)/objects/aa/one"), (two, "\(dir)/objects/bb/two"), (three, "\(dir)/objects/cc/three")],
                syncing: "\(dir)/partial")
        } throws: { error in
            (error as? MusterError)?.code == .io && "\(error)".contains("\(dir)/objects/bb/two")
        }
        #expect(FileManager.default.contents(atPath: "\(dir)/objects/aa/one") == Data("first".utf8))
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/objects/cc/three"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/partial").isEmpty)
    }

    @Test("a file system that cannot be opened for the flush deletes the batch and installs nothing")
    func unopenableFileSystem() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let one = try Self.stage("first", as: "one", in: dir)
        #expect {
            try ContentWriter.installStaged([(one, "\(dir)/objects/aa/one")], syncing: "\(dir)/no-such-directory")
        } throws: { error in
            (error as? MusterError)?.code == .io && "\(error)".contains("no-such-directory")
        }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/objects/aa/one"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/partial").isEmpty)
    }
}
