import Foundation
import Shared
import Testing

@testable import Agent

/// Which services a reattach restarts: the fingerprint rules of ``ModuleFileIndex`` on hand-made file tables.
@Suite("module file index: service fingerprints")
struct ModuleFileIndexTests {
    static let manifest = try! ModuleManifest.parse(
        yaml: """
            name: shop
            version: 1.0.0
            services:
              - name: api
                exec: [/bin/api-link, --config, /etc/api.toml, --port, "8080", /not/in/image]
              - name: db
                exec: [/bin/db, --data, /share/db/]
            """, file: "module.yaml"
    ).manifest

    static let base: [String: String] = [
        "/bin": "d 1777", "/bin/api": "f 755 10 /aa/1", "/bin/api-link": "l api", "/bin/db": "f 755 10 /aa/2",
        "/etc": "d 1777", "/etc/api.toml": "f 644 5 /aa/3", "/etc/shared.toml": "f 644 5 /aa/4",
        "/share": "d 1777", "/share/db": "d 1777", "/share/db/schema.sql": "f 644 5 /aa/5",
        "/lib/x.so": "f 644 5 /aa/6",
    ]

    static func fingerprints(_ entries: [String: String]) -> [String: String] {
        let index = ModuleFileIndex(entries: entries)
        return Dictionary(
            uniqueKeysWithValues: manifest.services.map { ($0.name, index.fingerprint(of: $0, in: manifest)) })
    }

    static func changed(_ change: (inout [String: String]) -> Void) -> Set<String> {
        var entries = base
        change(&entries)
        let before = fingerprints(base)
        let after = fingerprints(entries)
        return Set(before.keys.filter { before[$0] != after[$0] })
    }

    @Test("a service owns its executable (through symlinks) and the paths its arguments name")
    func paths() {
        let index = ModuleFileIndex(entries: Self.base)
        #expect(index.paths(of: Self.manifest.services[0]) == ["/bin/api-link", "/bin/api", "/etc/api.toml"])
        #expect(index.paths(of: Self.manifest.services[1]) == ["/bin/db", "/share/db"])
    }

    @Test("a change to a service's own file changes only that service; a shared file changes every service")
    func changes() {
        #expect(Self.changed { $0["/bin/db"] = "f 755 11 /aa/7" } == ["db"])
        #expect(Self.changed { $0["/bin/api"] = "f 755 10 /aa/8" } == ["api"], "the link target belongs to api")
        #expect(Self.changed { $0["/etc/api.toml"] = "f 600 5 /aa/3" } == ["api"], "a mode change counts")
        #expect(Self.changed { $0["/share/db/new.sql"] = "f 644 1 /aa/9" } == ["db"], "below an argument directory")
        #expect(Self.changed { $0["/etc/shared.toml"] = "f 644 5 /aa/0" } == ["api", "db"])
        #expect(Self.changed { $0["/lib/y.so"] = "f 644 5 /aa/0" } == ["api", "db"], "a new shared file")
        #expect(Self.changed { $0["/bin/api-link"] = "l db" } == ["api", "db"], "api now runs db's file")
        #expect(Self.changed { _ in }.isEmpty)
    }

    @Test("normalize stays inside the root")
    func normalize() {
        #expect(ModuleFileIndex.normalize("/a/./b//../c/") == "/a/c")
        #expect(ModuleFileIndex.normalize("/../../etc") == "/etc")
    }
}
