import Foundation
import Shared
import Testing

@testable import Agent

@Suite("unit writer")
struct UnitWriterTests {
    static func unit(owner: String = "web/api", description: String = "API") -> UnitFile {
        UnitFile(
            owner: owner, unit: .init(description: description),
            service: .init(execStart: ["/bin/true"], sandbox: .trusted))
    }

    @Test("writes atomically, reports unchanged rewrites and updates")
    func writes() throws {
        let dir = try TemporaryDirectory("writer")
        defer { dir.remove() }
        let writer = UnitWriter(directory: dir.path)
        let name = try UnitName.service(module: "web", service: "api")
        #expect(try writer.write(Self.unit(), as: name) == .created)
        #expect(try writer.write(Self.unit(), as: name) == .unchanged)
        #expect(try writer.write(Self.unit(description: "API v2"), as: name) == .updated)
        let text = try String(contentsOfFile: writer.path(of: name), encoding: .utf8)
        #expect(text.contains("Description=API v2"))
        // No temporary files left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == [name.rawValue])
        #expect(try writer.units(ownedBy: { $0.hasPrefix("web/") }) == [name])
        #expect(try writer.owner(of: name) == "web/api")
    }

    @Test("a unit that exists and is not ours is refused, never overwritten or removed")
    func foreignUnit() throws {
        let dir = try TemporaryDirectory("writer")
        defer { dir.remove() }
        let writer = UnitWriter(directory: dir.path)
        let name = try UnitName.service(module: "web", service: "api")
        let foreign = "[Unit]\nDescription=hand-written\n\n[Service]\nExecStart=/bin/true\n"
        try foreign.write(toFile: writer.path(of: name), atomically: true, encoding: .utf8)

        let error = try #require(throws: MusterError.self) { try writer.write(Self.unit(), as: name) }
        #expect(error.code == .conflict)
        #expect(error.message.contains(writer.path(of: name)))
        #expect(throws: MusterError.self) { try writer.remove(name) }
        #expect(try String(contentsOfFile: writer.path(of: name), encoding: .utf8) == foreign)
        #expect(try writer.owner(of: name) == "")
        #expect(try writer.units(ownedBy: { _ in true }).isEmpty)
    }

    @Test("a unit owned by another module is refused")
    func otherOwner() throws {
        let dir = try TemporaryDirectory("writer")
        defer { dir.remove() }
        let writer = UnitWriter(directory: dir.path)
        let name = try UnitName.service(module: "web", service: "api")
        try writer.write(Self.unit(owner: "web-x/api"), as: name)
        let error = try #require(throws: MusterError.self) { try writer.write(Self.unit(owner: "web/api"), as: name) }
        #expect(error.code == .conflict)
        #expect(throws: MusterError.self) { try writer.remove(name, owner: "web/api") }
        #expect(try writer.remove(name, owner: "web-x/api"))
    }

    @Test("a symlink (masked unit) is not ours")
    func symlink() throws {
        let dir = try TemporaryDirectory("writer")
        defer { dir.remove() }
        let writer = UnitWriter(directory: dir.path)
        let name = try UnitName.service(module: "web", service: "api")
        try FileManager.default.createSymbolicLink(atPath: writer.path(of: name), withDestinationPath: "/dev/null")
        let error = try #require(throws: MusterError.self) { try writer.write(Self.unit(), as: name) }
        #expect(error.code == .conflict)
    }

    @Test("removing a unit that is not there is a no-op")
    func removeMissing() throws {
        let dir = try TemporaryDirectory("writer")
        defer { dir.remove() }
        let writer = UnitWriter(directory: dir.path)
        #expect(try writer.remove(try UnitName.service(module: "web", service: "api")) == false)
    }

    @Test("invalid values surface as invalidInput naming unit and field")
    func invalid() throws {
        let dir = try TemporaryDirectory("writer")
        defer { dir.remove() }
        let writer = UnitWriter(directory: dir.path)
        let name = try UnitName.service(module: "web", service: "api")
        let error = try #require(throws: MusterError.self) {
            try writer.write(Self.unit(description: "a\n[Service]"), as: name)
        }
        #expect(error.code == .invalidInput)
        #expect(error.message.contains("muster-web-api.service"))
        #expect(error.message.contains("Unit.Description"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }
}
