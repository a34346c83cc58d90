import Crypto
import Foundation
import Shared
import X509

/// What a joined agent knows about itself, stored under `<state-dir>/identity/`:
///
/// | file | content |
/// | --- | --- |
/// | `node-id` | the node's UUID, one line |
/// | `node.key` | P-256 private key, PEM, mode 0600 (never leaves the host) |
/// | `node.crt` | the node's client certificate, PEM |
/// | `ca.crt` | the cluster CA certificate, PEM |
/// | `coordinator` | the coordinator's `HOST:PORT`, one line |
///
/// Each file is replaced atomically; `node.crt` is rewritten on every renewal.
public struct NodeIdentity: Sendable {
    public var nodeID: UUID
    public var coordinator: CoordinatorAddress
    public var privateKey: P256.Signing.PrivateKey
    public var certificate: Certificate
    public var caCertificate: Certificate

    public init(
        nodeID: UUID, coordinator: CoordinatorAddress, privateKey: P256.Signing.PrivateKey, certificate: Certificate,
        caCertificate: Certificate
    ) {
        self.nodeID = nodeID
        self.coordinator = coordinator
        self.privateKey = privateKey
        self.certificate = certificate
        self.caCertificate = caCertificate
    }

    /// Paths of the identity files.
    public struct Paths: Sendable {
        public var directory: String
        public var nodeID: String { "\(directory)/node-id" }
        public var key: String { "\(directory)/node.key" }
        public var certificate: String { "\(directory)/node.crt" }
        public var caCertificate: String { "\(directory)/ca.crt" }
        public var coordinator: String { "\(directory)/coordinator" }

        public init(stateDirectory: String) {
            directory = "\(stateDirectory)/identity"
        }
    }

    /// Whether a state dir holds an identity.
    public static func exists(stateDirectory: String) -> Bool {
        FileManager.default.fileExists(atPath: Paths(stateDirectory: stateDirectory).nodeID)
    }

    /// Loads the identity.
    ///
    /// - Throws: `MusterError` `.notFound` when the agent has not joined, `.invalidInput` for damaged files.
    public static func load(stateDirectory: String) throws -> NodeIdentity {
        let paths = Paths(stateDirectory: stateDirectory)
        guard FileManager.default.fileExists(atPath: paths.nodeID) else {
            throw MusterError(
                .notFound, "this host has not joined a cluster (no \(paths.nodeID))",
                hint: "run `muster-agent join --coordinator HOST:7400 --token …` first")
        }
        let idText = try SecureFile.read(paths.nodeID).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let nodeID = UUID(uuidString: idText) else {
            throw MusterError(.invalidInput, "\(paths.nodeID) does not hold a node id")
        }
        let coordinator = try CoordinatorAddress(
            parsing: try SecureFile.read(paths.coordinator).trimmingCharacters(in: .whitespacesAndNewlines))
        return NodeIdentity(
            nodeID: nodeID, coordinator: coordinator,
            privateKey: try PEM.p256PrivateKey(from: try SecureFile.read(paths.key)),
            certificate: try PEM.certificate(from: try SecureFile.read(paths.certificate)),
            caCertificate: try PEM.certificate(from: try SecureFile.read(paths.caCertificate)))
    }

    /// Writes every file (key 0600, others 0644); the node id last, so a crash midway leaves "not joined".
    public func save(stateDirectory: String) throws {
        let paths = Paths(stateDirectory: stateDirectory)
        try SecureFile.makeDirectory(stateDirectory, mode: 0o755)
        try SecureFile.makeDirectory(paths.directory, mode: 0o700)
        try SecureFile.write(privateKey.pemRepresentation, to: paths.key, mode: 0o600)
        try SecureFile.write(try PEM.encode(certificate), to: paths.certificate, mode: 0o644)
        try SecureFile.write(try PEM.encode(caCertificate), to: paths.caCertificate, mode: 0o644)
        try SecureFile.write("\(coordinator)\n", to: paths.coordinator, mode: 0o644)
        try SecureFile.write("\(nodeID.uuidString.lowercased())\n", to: paths.nodeID, mode: 0o644)
    }

    /// Replaces the certificate after a renewal (atomically).
    public func saveCertificate(_ pem: String, stateDirectory: String) throws {
        try SecureFile.write(pem, to: Paths(stateDirectory: stateDirectory).certificate, mode: 0o644)
    }
}

/// `HOST:PORT` of a coordinator's agent listener; the port defaults to 7400, IPv6 as `[::1]:7400`.
public struct CoordinatorAddress: Sendable, Equatable, CustomStringConvertible {
    public static let defaultPort = 7400
    public var host: String
    public var port: Int

    public init(host: String, port: Int = Self.defaultPort) {
        self.host = host
        self.port = port
    }

    /// - Throws: `MusterError` `.usage` for an empty host or a bad port.
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var host = trimmed
        var port = Self.defaultPort
        if trimmed.hasPrefix("[") {
            guard let close = trimmed.firstIndex(of: "]") else {
                throw MusterError(.usage, "coordinator address '\(text)': missing ']' after an IPv6 address")
            }
            host = String(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
            let rest = trimmed[trimmed.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()), (1...65535).contains(p) else {
                    throw MusterError(.usage, "coordinator address '\(text)': the port must be 1-65535")
                }
                port = p
            }
        } else if let colon = trimmed.lastIndex(of: ":"), trimmed.firstIndex(of: ":") == colon {
            host = String(trimmed[..<colon])
            guard let p = Int(trimmed[trimmed.index(after: colon)...]), (1...65535).contains(p) else {
                throw MusterError(.usage, "coordinator address '\(text)': the port must be 1-65535")
            }
            port = p
        }
        guard !host.isEmpty else {
            throw MusterError(
                .usage, "coordinator address '\(text)' has no host", hint: "use HOST:PORT, e.g. 10.0.0.1:7400")
        }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
