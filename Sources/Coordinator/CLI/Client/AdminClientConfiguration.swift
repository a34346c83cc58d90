import Foundation
import Shared

/// `admin.json`: how the CLI reaches and authenticates to a coordinator's admin API.
///
/// `muster serve` writes it into its state directory once it is ready (with the real bound ports); an operator
/// can copy it with `ca.crt`, `admin.crt` and `admin.key` into `~/.config/muster/` (relative paths are resolved
/// against the file's directory).
public struct AdminClientConfiguration: Codable, Sendable, Equatable {
    public static let fileName = "admin.json"

    /// `HOST:PORT` of the admin API.
    public var adminAddress: String
    /// `HOST:PORT` agents dial.
    public var agentAddress: String
    /// Name the CLI verifies in the coordinator's certificate.
    public var serverName: String
    public var caFile: String
    public var certFile: String
    public var keyFile: String

    public init(
        adminAddress: String, agentAddress: String, serverName: String, caFile: String, certFile: String,
        keyFile: String
    ) {
        self.adminAddress = adminAddress
        self.agentAddress = agentAddress
        self.serverName = serverName
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }

    /// Writes the file atomically with mode 0600 (it points at the admin key).
    public func write(to path: String) throws {
        let data = try MusterJSON.encoder(pretty: true).encode(self)
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600])
        else {
            throw MusterError(.io, "cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else {
            throw MusterError(.io, "cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Finds and reads the configuration: `<state-dir>/admin.json` when a state directory is given (flag or
    /// `MUSTER_STATE_DIR`), else `~/.config/muster/admin.json`.
    /// - Throws: ``MusterError`` `.connectionFailed` saying where it looked and what to do.
    public static func locate(stateDirectory: String?, environment: [String: String]) throws
        -> AdminClientConfiguration
    {
        var candidates: [String] = []
        if let dir = stateDirectory ?? environment["MUSTER_STATE_DIR"], !dir.isEmpty {
            candidates.append("\(dir)/\(fileName)")
        } else {
            let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            candidates.append("\(home)/.config/muster/\(fileName)")
            candidates.append("/var/lib/muster/\(fileName)")
        }
        for path in candidates where FileManager.default.fileExists(atPath: path) {
            return try read(path)
        }
        throw MusterError(
            .connectionFailed, "no coordinator client configuration found (looked at \(candidates.joined(separator: ", ")))",
            hint: "pass --state-dir of a running `muster serve` (or set MUSTER_STATE_DIR), or copy its admin.json, "
                + "ca.crt, admin.crt and admin.key to ~/.config/muster/")
    }

    /// Reads one file, resolving relative paths against its directory.
    public static func read(_ path: String) throws -> AdminClientConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MusterError(.connectionFailed, "cannot read \(path)", hint: "check its permissions (it is 0600)")
        }
        var config: AdminClientConfiguration
        do {
            config = try MusterJSON.decoder().decode(AdminClientConfiguration.self, from: data)
        } catch {
            throw MusterError(.invalidInput, "\(path) is not a valid muster client configuration: \(error)")
        }
        let base = (path as NSString).deletingLastPathComponent
        func resolve(_ file: String) -> String { file.hasPrefix("/") ? file : "\(base)/\(file)" }
        config.caFile = resolve(config.caFile)
        config.certFile = resolve(config.certFile)
        config.keyFile = resolve(config.keyFile)
        return config
    }
}
