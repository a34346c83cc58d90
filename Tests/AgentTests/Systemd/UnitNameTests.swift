import Foundation
import Shared
import Testing

@testable import Agent

@Suite("unit names")
struct UnitNameTests {
    @Test("service names are <prefix>-<module>-<service>.service")
    func serviceName() throws {
        #expect(try UnitName.service(module: "web", service: "api").rawValue == "muster-web-api.service")
        #expect(try UnitName.service(prefix: "acme", module: "db_2", service: "x").rawValue == "acme-db_2-x.service")
    }

    @Test(
        "components outside the safe alphabet are refused",
        arguments: [
            "", "Web", "a b", "a/b", "../x", "-a", "a-", "a.b", "a\nb", "a%b", "a\\b", "é",
            String(repeating: "a", count: 65),
        ])
    func badComponents(component: String) throws {
        let error = try #require(throws: MusterError.self) {
            try UnitName.service(module: component, service: "api")
        }
        #expect(error.code == .invalidInput)
        #expect(error.message.contains("module name"))
        #expect(throws: MusterError.self) { try UnitName.service(module: "web", service: component) }
        #expect(throws: MusterError.self) { try UnitName.service(prefix: component, module: "web", service: "x") }
    }

    @Test("unit names are validated", arguments: ["", "foo", "foo.bogus", "a b.service", "a/b.service", ".service"])
    func invalidNames(name: String) {
        #expect(throws: MusterError.self) { try UnitName(name) }
    }

    static let paths = [
        "/", "/srv/data", "/srv/data/", "//srv//data", "/srv/./data", "/srv/my-data", "/srv/my data",
        "/srv/.hidden", "/.hidden/x", "/srv/a.b/c", "/srv/ünï", "/srv/a\\b", "/srv/a:b_c", "/srv/100%",
        "/mnt/x@y", "/srv/tab\tx",
    ]

    @Test(
        "mount unit names match systemd-escape --path --suffix=mount", .enabled(if: hasSystemdEscape), arguments: paths)
    func mountNamesMatchSystemd(path: String) throws {
        let expected = try runCommand("/usr/bin/systemd-escape", ["--path", "--suffix=mount", path])
        #expect(expected.status == 0, "systemd-escape: \(expected.stderr)")
        let ours = try UnitName.mount(where: path)
        #expect(ours.rawValue == expected.stdout.trimmingSuffixNewline())
    }

    @Test("mount paths systemd-escape refuses are refused too", arguments: ["/srv/../etc", "/a/..", "/../x"])
    func refusedPaths(path: String) throws {
        let theirs = try runCommand("/usr/bin/systemd-escape", ["--path", path])
        #expect(theirs.status != 0)
        #expect(throws: MusterError.self) { try UnitName.mount(where: path) }
    }

    /// systemd-escape --path escapes relative paths too; a mount point must be absolute, so we refuse them.
    @Test("relative mount paths are refused")
    func relativePath() {
        #expect(throws: MusterError.self) { try UnitName.mount(where: "relative/x") }
    }

    @Test("object paths match sd_bus_path_encode")
    func objectPath() throws {
        for name in ["muster-web-api.service", "srv-my\\x2ddata.mount", "a@b.service"] {
            let unit = try UnitName(name)
            #expect(unit.objectPath == (try SDBus.encodePath(prefix: "/org/freedesktop/systemd1/unit", id: name)))
        }
        #expect(
            try UnitName("muster-web-api.service").objectPath
                == "/org/freedesktop/systemd1/unit/muster_2dweb_2dapi_2eservice")
    }

    static var hasSystemdEscape: Bool {
        access("/usr/bin/systemd-escape", X_OK) == 0
    }
}

extension String {
    func trimmingSuffixNewline() -> String {
        var s = self
        while s.hasSuffix("\n") { s.removeLast() }
        return s
    }
}
