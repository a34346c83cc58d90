import Foundation
import Shared
import Testing

@testable import Agent

@Suite("rewriteJSONPaths: in-place, byte-preserving, all-or-nothing")
struct RewriteJSONPathsTests {
    let directory: String

    init() throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent(
                "muster-rewrite-\(UUID().uuidString.prefix(8))"
            ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ text: String, mode: Int = 0o640) throws -> String {
        let path = "\(directory)/\(name)"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    let rewrite = PathPrefixRewrite(from: "/srv/app/golden-repos", to: "/mnt/shared/golden-repos")

    @Test func rewritesOnSegmentBoundariesAndKeepsEveryOtherByte() throws {
        let original = """
            {
              "alias" : "linux",
              "path": "/srv/app/golden-repos/linux.git",
              "archive": "/srv/app/golden-repos-archive/linux.git",
              "root": "/srv/app/golden-repos",
              "big": 123456789012345678901234567890, "tiny": 1e-400,
              "escaped": "\\/srv\\/app\\/golden-repos\\/x \\u00e9",
              "snapshots": [ {"path": "/srv/app/golden-repos/linux.git/.versioned/1"}, {"path": "/elsewhere"} ]
            }

            """
        let path = try write("linux.json", original)
        let report = try RewriteJSONPaths().apply(.init(files: ["\(directory)/*.json"], rewrites: [rewrite]))
        #expect(report.valuesRewritten == 4)
        #expect(report.filesChanged == 1)
        let expected = """
            {
              "alias" : "linux",
              "path": "/mnt/shared/golden-repos/linux.git",
              "archive": "/srv/app/golden-repos-archive/linux.git",
              "root": "/mnt/shared/golden-repos",
              "big": 123456789012345678901234567890, "tiny": 1e-400,
              "escaped": "/mnt/shared/golden-repos/x é",
              "snapshots": [ {"path": "/mnt/shared/golden-repos/linux.git/.versioned/1"}, {"path": "/elsewhere"} ]
            }

            """
        #expect(try read(path) == expected)
        #expect(try read(path + ".pre-cluster") == original)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o640)
    }

    @Test func onlyTheNamedFieldsWithWildcards() throws {
        let path = try write(
            "a.json",
            #"{"path": "/srv/app/golden-repos/a", "note": "/srv/app/golden-repos/a", "snapshots": [{"path": "/srv/app/golden-repos/a/1"}]}"#
        )
        let report = try RewriteJSONPaths().apply(
            .init(files: [path], fields: ["/path", "/snapshots/*/path"], rewrites: [rewrite]))
        #expect(report.valuesRewritten == 2)
        #expect(
            try read(path)
                == #"{"path": "/mnt/shared/golden-repos/a", "note": "/srv/app/golden-repos/a", "snapshots": [{"path": "/mnt/shared/golden-repos/a/1"}]}"#
        )
    }

    @Test func aSecondRunChangesNothingAndKeepsTheFirstBackup() throws {
        let original = #"{"path": "/srv/app/golden-repos/a"}"#
        let path = try write("a.json", original)
        // `to` below `from`: a naive rewrite would grow the path on every run.
        let nested = PathPrefixRewrite(from: "/srv/app", to: "/srv/app/shared")
        _ = try RewriteJSONPaths().apply(.init(files: [path], rewrites: [nested]))
        let once = try read(path)
        #expect(once == #"{"path": "/srv/app/shared/golden-repos/a"}"#)
        let second = try RewriteJSONPaths().apply(.init(files: [path], rewrites: [nested]))
        #expect(second.valuesRewritten == 0)
        #expect(try read(path) == once)
        #expect(try read(path + ".pre-cluster") == original)
    }

    @Test func anInvalidFileRefusesTheWholeTaskAndTouchesNothing() throws {
        let good = try write("good.json", #"{"path": "/srv/app/golden-repos/a"}"#)
        let bad = try write("bad.json", "{\"path\": \"/srv/app/golden-repos/b\",\n  oops }")
        #expect {
            try RewriteJSONPaths().apply(.init(files: ["\(directory)/*.json"], rewrites: [rewrite]))
        } throws: { error in
            let error = error as? MusterError
            return error?.code == .invalidInput && error?.message.contains("bad.json") == true
                && error?.message.contains("line 2") == true
        }
        #expect(try read(good) == #"{"path": "/srv/app/golden-repos/a"}"#)
        #expect(try read(bad) == "{\"path\": \"/srv/app/golden-repos/b\",\n  oops }")
        #expect(!FileManager.default.fileExists(atPath: good + ".pre-cluster"))
    }

    @Test func restorePutsTheOriginalsBack() throws {
        let original = "{\n  \"path\": \"/srv/app/golden-repos/a\"\n}\n"
        let path = try write("a.json", original)
        _ = try RewriteJSONPaths().apply(.init(files: [path], rewrites: [rewrite]))
        #expect(try read(path) != original)
        let restored = try RewriteJSONPaths().apply(.init(files: [path], rewrites: [rewrite], restore: true))
        #expect(restored.restored && restored.filesChanged == 1)
        #expect(try read(path) == original)
    }

    @Test func dryRunWritesNothing() throws {
        let original = #"{"path": "/srv/app/golden-repos/a"}"#
        let path = try write("a.json", original)
        let report = try RewriteJSONPaths().apply(.init(files: [path], rewrites: [rewrite], dryRun: true))
        #expect(report.valuesRewritten == 1)
        #expect(report.files.first?.examples.first == "/path: /srv/app/golden-repos/a → /mnt/shared/golden-repos/a")
        #expect(try read(path) == original)
        #expect(!FileManager.default.fileExists(atPath: path + ".pre-cluster"))
    }

    @Test func badSpecsAreRefusedPrecisely() throws {
        #expect {
            try RewriteJSONPaths().apply(.init(files: ["\(directory)/none-*.json"], rewrites: [rewrite]))
        } throws: {
            ($0 as? MusterError)?.code == .notFound
        }
        #expect {
            try RewriteJSONPaths().apply(
                .init(files: ["\(directory)/*.json"], rewrites: [.init(from: "srv/app", to: "/x")]))
        } throws: { ($0 as? MusterError)?.message.contains("rewrites[0].from") == true }
        _ = try write("a.json", "{}")
        #expect {
            try RewriteJSONPaths().apply(.init(files: ["\(directory)/a.json"], fields: ["path"], rewrites: [rewrite]))
        } throws: { ($0 as? MusterError)?.message.contains("must start with '/'") == true }
    }
}

@Suite("JSONScan and path prefixes")
struct JSONScanTests {
    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", "-", "\"\\x\"", "\"a\nb\"", "{\"a\":1}x", "tru",
        "{\"a\":1,\"a\":2}", "\"\\ud800\"",
    ])
    func refusesInvalidJSON(_ text: String) {
        #expect(throws: MusterError.self) { try JSONScan(Array(text.utf8)) }
    }

    @Test func decodesStringsAndRecordsTheirPaths() throws {
        let scan = try JSONScan(Array(#"{"a": ["x", {"b": "\ud83d\ude00\"\\"}], "c": null}"#.utf8))
        #expect(scan.strings.map(\.value) == ["x", "😀\"\\"])
        #expect(scan.strings.last?.path == [.key("a"), .index(1), .key("b")])
    }

    @Test(
        arguments: [
            ("/srv/app", "/srv/app", "/new"), ("/srv/app/x", "/srv/app", "/new/x"), ("/srv/app-old/x", "/srv/app", nil),
            ("/srv/apple", "/srv/app", nil), ("/srv/app/", "/srv/app/", "/new/"), ("relative/srv/app", "/srv/app", nil),
        ] as [(String, String, String?)])
    func prefixesMatchOnSegmentBoundaries(_ path: String, _ from: String, _ expected: String?) {
        #expect(PathPrefixRewrite(from: from, to: "/new").apply(to: path) == expected)
    }
}
