import Foundation
import Shared

/// The systemd `.mount` unit of a volume (DESIGN §6).
///
/// Name: systemd path escaping of the mount path (``UnitName/mount(where:)``), as systemd requires for mount
/// units. `What=` is `SERVER:/EXPORT` (NFS) or the node's directory (bind); `Type=` `nfs4`, `nfs` or `none`;
/// `Options=` starts with the operator's options, then `_netdev` (NFS) and every NFS default the operator did not
/// set (``nfsDefaults``); bind volumes get `bind`. The owner marker is `volume/NAME`, so the agent only ever
/// touches volume units it wrote.
enum MountUnit {
    /// NFS defaults: `hard` (never return I/O errors on a slow server), `timeo=600` (60 s per RPC, as
    /// nfs(5) recommends for TCP), `retrans=2`, `noresvport` (a new source port on reconnect, so a server that lost
    /// state does not drop us). An operator option with the same key (or `soft` for `hard`) replaces one.
    static let nfsDefaults = ["hard", "timeo=600", "retrans=2", "noresvport"]

    /// Owner marker of a volume's unit.
    static func owner(volume name: String) -> String { "volume/\(name)" }

    /// The volume name from an owner marker, `nil` for other owners (module services).
    static func volumeName(owner: String) -> String? {
        owner.hasPrefix("volume/") ? String(owner.dropFirst("volume/".count)) : nil
    }

    /// Options in the order they are written.
    static func options(for spec: VolumeSpec) -> [String] {
        var options = spec.options
        func key(_ option: String) -> String {
            let name = String(option.split(separator: "=", maxSplits: 1).first ?? "")
            // hard/soft and resvport/noresvport are one setting each.
            switch name {
            case "soft", "hard": return "hard"
            case "resvport", "noresvport": return "noresvport"
            default: return name
            }
        }
        switch spec.type {
        case .bind:
            if !options.contains("bind") && !options.contains("rbind") { options.insert("bind", at: 0) }
        case .nfs, .nfs4:
            if !options.contains("_netdev") { options.append("_netdev") }
            let present = Set(options.map(key))
            options += nfsDefaults.filter { !present.contains(key($0)) }
        }
        return options
    }

    /// `What=`.
    static func what(for spec: VolumeSpec) -> String {
        switch spec.type {
        case .bind: spec.source
        case .nfs, .nfs4: "\(spec.server ?? ""):\(spec.source)"
        }
    }

    /// Name and file of the volume's unit.
    /// - Throws: ``MusterError`` `.invalidInput` for an invalid spec or a value that cannot be written safely.
    static func make(_ spec: VolumeSpec) throws -> (name: UnitName, file: UnitFile) {
        try spec.validate()
        let name = try UnitName.mount(where: spec.mountPath)
        var unit = UnitFile.UnitSection(description: "Muster volume \(spec.name)")
        if spec.type.isNetwork {
            // What _netdev implies for fstab entries, spelled out for a unit that is started by hand.
            unit.after = [try UnitName("network-online.target")]
            unit.wants = [try UnitName("network-online.target")]
        }
        let file = UnitFile(
            owner: owner(volume: spec.name), unit: unit,
            mount: .init(
                what: what(for: spec), where: MountTable.normalize(spec.mountPath), type: spec.type.fileSystemType,
                options: options(for: spec)))
        return (name, file)
    }

    /// `What=`, `Where=` and `Type=` of a rendered mount unit (to report on units found on disk).
    static func parse(_ text: String) -> (what: String, where: String, type: String)? {
        var values: [String: String] = [:]
        var section = ""
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("[") {
                section = trimmed
                continue
            }
            guard section == "[Mount]", let eq = trimmed.firstIndex(of: "=") else { continue }
            values[String(trimmed[..<eq])] = String(trimmed[trimmed.index(after: eq)...])
        }
        guard let what = values["What"], let path = values["Where"], let type = values["Type"] else { return nil }
        return (what, path, type)
    }
}
