/// How a volume is mounted (DESIGN §6).
public enum VolumeType: String, Codable, Sendable, CaseIterable {
    /// NFS version 3 (`Type=nfs`).
    case nfs
    /// NFS version 4 (`Type=nfs4`).
    case nfs4
    /// A directory of the node bind-mounted at the mount path (`Type=none`, `Options=bind`): single host and tests.
    case bind

    /// `Type=` of the `.mount` unit.
    public var fileSystemType: String {
        switch self {
        case .nfs: "nfs"
        case .nfs4: "nfs4"
        case .bind: "none"
        }
    }

    public var isNetwork: Bool { self != .bind }
}

/// A volume as the coordinator stores it and a `mountVolume` task carries it.
///
/// `source` is the export path on the server (NFS) or the node's directory (bind). `options` are the operator's
/// mount options; the agent adds `_netdev` and the NFS defaults an option does not override
/// (`hard,timeo=600,retrans=2,noresvport`).
public struct VolumeSpec: Codable, Sendable, Equatable {
    public var name: String
    public var type: VolumeType
    /// NFS server host name or address; `nil` for bind volumes.
    public var server: String?
    public var source: String
    public var options: [String]
    public var mountPath: String

    public init(
        name: String, type: VolumeType, server: String? = nil, source: String, options: [String] = [],
        mountPath: String
    ) {
        self.name = name
        self.type = type
        self.server = server
        self.source = source
        self.options = options
        self.mountPath = mountPath
    }

    /// The default mount path of a volume: `/mnt/muster/NAME`.
    public static func defaultMountPath(name: String) -> String { "/mnt/muster/\(name)" }

    /// Checks the name (`[a-z0-9][a-z0-9_-]*`, ≤ 64), the server (host name or address characters), the paths
    /// (absolute, no `..`) and the options (no `,`, `=` at most once, from a safe alphabet).
    /// - Throws: ``MusterError`` `.invalidInput` naming the field.
    public func validate() throws {
        let lowerAlnum: (UInt8) -> Bool = { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) }
        let nameBytes = Array(name.utf8)
        guard let first = nameBytes.first, lowerAlnum(first), nameBytes.count <= 64,
            nameBytes.allSatisfy({ lowerAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
        else {
            throw MusterError(
                .invalidInput,
                "volume name '\(name)' must be 1–64 characters from [a-z0-9_-], starting with a letter or digit")
        }
        switch type {
        case .bind:
            guard server == nil else { throw MusterError(.invalidInput, "a bind volume has no server") }
        case .nfs, .nfs4:
            guard let server, !server.isEmpty, server.utf8.count <= 253,
                server.utf8.allSatisfy({
                    lowerAlnum($0) || ($0 >= 0x41 && $0 <= 0x5A) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
                        || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "]")
                }), !server.hasPrefix("-")
            else {
                throw MusterError(
                    .invalidInput, "NFS server '\(server ?? "")' must be a host name or an IP address",
                    hint: "write --nfs SERVER:/EXPORT, e.g. --nfs 10.0.0.5:/srv/golden")
            }
        }
        try Self.checkPath(source, what: type == .bind ? "bind source" : "NFS export")
        try Self.checkPath(mountPath, what: "mount path")
        if mountPath.split(separator: "/").isEmpty {
            throw MusterError(.invalidInput, "the mount path must not be '/'")
        }
        for option in options {
            let allowed: (UInt8) -> Bool = {
                lowerAlnum($0) || ($0 >= 0x41 && $0 <= 0x5A) || "._-=:/+@".utf8.contains($0)
            }
            guard !option.isEmpty, option.utf8.allSatisfy(allowed), !option.hasPrefix("-"),
                option.utf8.filter({ $0 == UInt8(ascii: "=") }).count <= 1
            else {
                throw MusterError(
                    .invalidInput,
                    "mount option '\(option)' is not allowed: one option per entry, from [A-Za-z0-9._-=:/+@]",
                    hint: "split options at commas: --options hard,timeo=300 becomes [\"hard\", \"timeo=300\"]")
            }
        }
    }

    /// Absolute, no `..` component, no control characters, only characters a unit file can carry unescaped.
    public static func checkPath(_ path: String, what: String) throws {
        guard path.hasPrefix("/") else {
            throw MusterError(.invalidInput, "the \(what) '\(path)' is not an absolute path", hint: "start it with /")
        }
        if path.split(separator: "/", omittingEmptySubsequences: true).contains("..") {
            throw MusterError(
                .invalidInput, "the \(what) '\(path)' contains a '..' component", hint: "give the path without '..'")
        }
        guard
            path.utf8.allSatisfy({
                ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39)
                    || "/._-+@:".utf8.contains($0)
            })
        else {
            throw MusterError(
                .invalidInput, "the \(what) '\(path)' contains characters outside [A-Za-z0-9/._+@:-]",
                hint: "use a path without spaces, quotes, '%' or control characters")
        }
    }
}

/// `unmountVolume` task spec: which volume, at which path.
public struct UnmountVolumeSpec: Codable, Sendable, Equatable {
    public var name: String
    public var mountPath: String

    public init(name: String, mountPath: String) {
        self.name = name
        self.mountPath = mountPath
    }
}

/// One volume's state on a node, in every health report and in `mountVolume` results.
public struct VolumeStatus: Codable, Sendable, Equatable {
    public var name: String
    public var mountPath: String
    /// The `.mount` unit's ActiveState (`active`, `failed`, …), `nil` when systemd could not be asked.
    public var unitState: String?
    /// Found in the mount table (`/proc/self/mountinfo`) with the expected source.
    public var mounted: Bool
    /// A probe file could be created, fsynced and removed.
    public var writable: Bool
    public var totalBytes: UInt64?
    public var freeBytes: UInt64?
    /// Why the volume is not mounted or not writable.
    public var problem: String?

    public init(
        name: String, mountPath: String, unitState: String?, mounted: Bool, writable: Bool, totalBytes: UInt64?,
        freeBytes: UInt64?, problem: String?
    ) {
        self.name = name
        self.mountPath = mountPath
        self.unitState = unitState
        self.mounted = mounted
        self.writable = writable
        self.totalBytes = totalBytes
        self.freeBytes = freeBytes
        self.problem = problem
    }
}
