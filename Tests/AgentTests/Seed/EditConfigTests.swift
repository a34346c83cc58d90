import Foundation
import Shared
import Testing

@testable import Agent

@Suite("editConfig: json, yaml and env, expectation checked, backup kept")
struct EditConfigTests {
    let directory: String

    init() throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent(
                "muster-config-\(UUID().uuidString.prefix(8))"
            ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ text: String) throws -> String {
        let path = "\(directory)/\(name)"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    @Test func jsonSetsExistingAndNewKeysInPlace() throws {
        let original = """
            {
              "storage_mode": "sqlite",
              "port": 8080,
              "database": {"path": "/srv/app/app.db"}
            }

            """
        let path = try write("config.json", original)
        let report = try EditConfig().apply(
            .init(
                file: path, format: .json, expect: ["storage_mode": .string("sqlite")],
                set: [
                    "storage_mode": .string("postgres"), "/database/url": .string("postgres://db/app"),
                    "/cluster/volume": .string("/mnt/shared"),
                ]))
        #expect(report.changed == ["/cluster/volume", "/database/url", "storage_mode"])
        #expect(
            try read(path) == """
                {
                  "storage_mode": "postgres",
                  "port": 8080,
                  "database": {"path": "/srv/app/app.db", "url": "postgres://db/app"},
                  "cluster": {"volume": "/mnt/shared"}
                }

                """, "\((try? read(path)) ?? "")")
        #expect(try read(path + ".pre-cluster") == original)
        // A re-run after success is a no-op, even though `expect` no longer holds.
        let again = try EditConfig().apply(
            .init(
                file: path, format: .json, expect: ["storage_mode": .string("sqlite")],
                set: [
                    "storage_mode": .string("postgres"), "/database/url": .string("postgres://db/app"),
                    "/cluster/volume": .string("/mnt/shared"),
                ]))
        #expect(again.changed.isEmpty)
        // Rollback.
        _ = try EditConfig().apply(.init(file: path, format: .json, set: [:], restore: true))
        #expect(try read(path) == original)
    }

    @Test func anUnexpectedConfigIsRefusedAndLeftAlone() throws {
        let original = #"{"storage_mode": "memory"}"#
        let path = try write("config.json", original)
        #expect {
            try EditConfig().apply(
                .init(
                    file: path, format: .json, expect: ["storage_mode": .string("sqlite")],
                    set: ["storage_mode": .string("postgres")]))
        } throws: { error in
            let error = error as? MusterError
            return error?.code == .conflict && error?.message.contains("\"memory\"") == true
                && error?.message.contains("\"sqlite\"") == true
        }
        #expect(try read(path) == original)
        #expect(!FileManager.default.fileExists(atPath: path + ".pre-cluster"))
    }

    @Test func invalidJSONIsRefusedUntouched() throws {
        let path = try write("config.json", "{\"storage_mode\": sqlite}")
        #expect {
            try EditConfig().apply(.init(file: path, format: .json, set: ["storage_mode": .string("postgres")]))
        } throws: { ($0 as? MusterError)?.code == .invalidInput }
        #expect(try read(path) == "{\"storage_mode\": sqlite}")
    }

    @Test func yamlKeepsCommentsAndOrder() throws {
        let path = try write(
            "config.yaml",
            """
            # the app's config
            storage_mode: sqlite   # standalone
            server:
              port: 8080
              # data lives here
              data_dir: /srv/app/data
            other: 1

            """)
        _ = try EditConfig().apply(
            .init(
                file: path, format: .yaml, expect: ["storage_mode": .string("sqlite"), "/server/port": .number(8080)],
                set: [
                    "storage_mode": .string("postgres"), "/server/data_dir": .string("/mnt/shared/data"),
                    "/server/replicas": .number(3),
                ]))
        #expect(
            try read(path) == """
                # the app's config
                storage_mode: "postgres"
                server:
                  port: 8080
                  # data lives here
                  data_dir: "/mnt/shared/data"
                  replicas: 3
                other: 1

                """, "\((try? read(path)) ?? "")")
    }

    @Test func envFilesKeepExportAndQuoteWhenNeeded() throws {
        let path = try write("app.env", "# app\nexport STORAGE_MODE=sqlite\nPORT=8080\n")
        _ = try EditConfig().apply(
            .init(
                file: path, format: .env, expect: ["STORAGE_MODE": .string("sqlite")],
                set: ["STORAGE_MODE": .string("postgres"), "DATABASE_URL": .string("postgres://db/app?x=1 y")]))
        #expect(
            try read(path)
                == "# app\nexport STORAGE_MODE=postgres\nPORT=8080\nDATABASE_URL=\"postgres://db/app?x=1 y\"\n")
        let bad = try write("bad.env", "not an assignment\n")
        #expect {
            try EditConfig().apply(.init(file: bad, format: .env, set: ["A": .string("b")]))
        } throws: { ($0 as? MusterError)?.message.contains("line 1") == true }
    }
}
