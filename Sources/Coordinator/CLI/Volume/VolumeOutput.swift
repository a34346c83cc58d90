import Foundation
import Shared

/// How the `muster volume` commands print: tables for people, JSON (sorted keys, ISO-8601 dates) for scripts.
enum VolumeOutput {
    enum Item {
        case volumes([VolumeView])
        case volume(VolumeView)
        case changes([VolumeChange])
    }

    static func render(_ item: Item, options: OutputOptions) throws -> String {
        if options.json {
            let encoder = MusterJSON.encoder(pretty: true)
            let data: Data =
                switch item {
                case .volumes(let volumes): try encoder.encode(volumes)
                case .volume(let volume): try encoder.encode(volume)
                case .changes(let changes): try encoder.encode(changes)
                }
            return String(decoding: data, as: UTF8.self)
        }
        if options.quiet {
            switch item {
            case .volumes(let volumes): return volumes.map(\.name).joined(separator: "\n")
            case .volume(let volume): return volume.name
            case .changes(let changes):
                return changes.compactMap { $0.task?.id.uuidString.lowercased() }.joined(separator: "\n")
            }
        }
        switch item {
        case .volumes(let volumes):
            var table = Table([
                "NAME", "TYPE", "SOURCE", "MOUNT PATH", "NODE", "WANTED", "TASK", "MOUNTED", "WRITABLE", "FREE",
            ])
            for volume in volumes {
                let source = volume.server.map { "\($0):\(volume.source)" } ?? volume.source
                if volume.attachments.isEmpty {
                    table.append([
                        volume.name, volume.type.rawValue, source, volume.mountPath, "-", "-", "-", "-", "-", "-",
                    ])
                }
                for a in volume.attachments {
                    table.append([
                        volume.name, volume.type.rawValue, source, volume.mountPath,
                        String(a.node.uuidString.lowercased().prefix(8)), a.desired, a.taskState?.rawValue ?? "-",
                        a.status.map { $0.mounted ? "yes" : "no" } ?? "?",
                        a.status.map { $0.writable ? "yes" : "no" } ?? "?",
                        a.status?.freeBytes.map(Output.bytes) ?? "-",
                    ])
                }
            }
            return table.rendered
        case .volume(let volume):
            let source = volume.server.map { "\($0):\(volume.source)" } ?? volume.source
            return "volume \(volume.name): \(volume.type.rawValue) \(source) at \(volume.mountPath)"
                + (volume.options.isEmpty ? "" : " (options \(volume.options.joined(separator: ",")))")
        case .changes(let changes):
            var table = Table(["NODE", "ACTION", "OUTCOME", "TASK", "STATE", "ERROR"])
            for c in changes {
                table.append([
                    c.node.uuidString.lowercased(), c.action, c.outcome, c.task?.id.uuidString.lowercased() ?? "-",
                    c.task?.state.rawValue ?? "-", c.task?.error?.message ?? "",
                ])
            }
            return table.rendered
        }
    }
}
