import Foundation

/// Where the built `muster` and `muster-agent` executables are.
///
/// `MUSTER_BIN_DIR` wins; otherwise the directory holding the test bundle (`swift build --show-bin-path`, since
/// SwiftPM puts `musterPackageTests.xctest` next to the products), then `.build/debug` under the working directory.
enum Binaries {
    static let directory: String = {
        if let dir = ProcessInfo.processInfo.environment["MUSTER_BIN_DIR"], !dir.isEmpty { return dir }
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            let dir = (exe as NSString).deletingLastPathComponent
            if FileManager.default.isExecutableFile(atPath: "\(dir)/muster") { return dir }
        }
        return FileManager.default.currentDirectoryPath + "/.build/debug"
    }()

    static var muster: String { "\(directory)/muster" }
    static var agent: String { "\(directory)/muster-agent" }

    /// Throws a message that says how to build when an executable is missing.
    static func check() throws {
        for path in [muster, agent] where !FileManager.default.isExecutableFile(atPath: path) {
            throw HarnessError("\(path) not found: run `swift build --build-tests` first (or set MUSTER_BIN_DIR)")
        }
    }
}

/// A scratch directory for one test, removed by ``remove()``.
struct ScratchDirectory: Sendable {
    let path: String

    init(_ label: String) throws {
        let template = "/tmp/muster-it-\(label)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { throw HarnessError("mkdtemp failed for \(template)") }
        path = String(cString: made)
    }

    func sub(_ name: String) throws -> String {
        let p = "\(path)/\(name)"
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
