import Foundation
import Shared

/// Everything the CLI prints, rendered in one place: tables for people, JSON for scripts.
enum Output {
    enum Item {
        case nodes([NodeView])
        case node(NodeView)
        case tokens([TokenView])
        case token(TokenView)
        case createdToken(CreatedToken)
        case tasks([TaskRecord])
        case task(TaskRecord)
        case modules([ModuleRecord])
    }

    /// Renders `item` as JSON (sorted keys, ISO-8601 dates), quietly (ids / token only) or as a table.
    static func render(_ item: Item, options: OutputOptions, now: Date = Date()) throws -> String {
        if options.json {
            let encoder = MusterJSON.encoder(pretty: true)
            let data: Data =
                switch item {
                case .nodes(let nodes): try encoder.encode(nodes)
                case .node(let node): try encoder.encode(node)
                case .tokens(let tokens): try encoder.encode(tokens)
                case .token(let token): try encoder.encode(token)
                case .createdToken(let created): try encoder.encode(created)
                case .tasks(let tasks): try encoder.encode(tasks)
                case .task(let task): try encoder.encode(task)
                case .modules(let modules): try encoder.encode(modules)
                }
            return String(decoding: data, as: UTF8.self)
        }
        if options.quiet {
            switch item {
            case .nodes(let nodes): return nodes.map { $0.id.uuidString.lowercased() }.joined(separator: "\n")
            case .node(let node): return node.id.uuidString.lowercased()
            case .tokens(let tokens): return tokens.map(\.id).joined(separator: "\n")
            case .token(let token): return token.id
            case .createdToken(let created): return created.token
            case .tasks(let tasks): return tasks.map { $0.id.uuidString.lowercased() }.joined(separator: "\n")
            case .task(let task): return task.id.uuidString.lowercased()
            case .modules(let modules): return modules.map { "\($0.name)@\($0.version)" }.joined(separator: "\n")
            }
        }
        switch item {
        case .nodes(let nodes):
            var table = Table(["ID", "HOSTNAME", "STATE", "LAST SEEN", "ADDRESS", "VERSION", "LABELS"])
            for node in nodes {
                table.append([
                    node.id.uuidString.lowercased(), node.hostname, node.state.rawValue, ago(node.lastSeen, now: now),
                    node.address ?? "-", node.agentVersion, labels(node.labels),
                ])
            }
            return table.rendered
        case .node(let node):
            var lines = [
                "id:          \(node.id.uuidString.lowercased())",
                "hostname:    \(node.hostname)",
                "state:       \(node.state.rawValue)",
                "address:     \(node.address ?? "-")",
                "last seen:   \(ago(node.lastSeen, now: now))",
                "joined:      \(iso(node.joinedAt))",
                "version:     \(node.agentVersion)",
                "labels:      \(labels(node.labels))",
                "os:          \(node.facts.os), kernel \(node.facts.kernel)",
                "cpus/memory: \(node.facts.cpuCount) CPUs, \(bytes(node.facts.memoryBytes))",
                "machine id:  \(node.facts.machineID)",
            ]
            if let report = node.lastReport {
                lines.append(
                    "health:      load \(report.load.map { String(format: "%.2f", $0) }.joined(separator: " ")), "
                        + "memory \(bytes(report.memoryAvailableBytes)) free of \(bytes(report.memoryTotalBytes)), "
                        + "disk \(bytes(report.diskFreeBytes)) free of \(bytes(report.diskTotalBytes)), "
                        + "up \(Int(report.uptimeSeconds))s")
            }
            return lines.joined(separator: "\n")
        case .tokens(let tokens):
            var table = Table(["ID", "STATUS", "USES", "EXPIRES", "LABELS"])
            for token in tokens {
                table.append([
                    token.id, token.status.rawValue, "\(token.uses)/\(token.usesAllowed.map(String.init) ?? "∞")",
                    iso(token.expiresAt), labels(token.labels),
                ])
            }
            return table.rendered
        case .token(let token):
            return "token \(token.id): \(token.status.rawValue)"
        case .tasks(let tasks):
            var table = Table(["ID", "NODE", "KIND", "STATE", "ATTEMPTS", "CREATED", "UPDATED"])
            for task in tasks {
                table.append([
                    task.id.uuidString.lowercased(), String(task.nodeID.uuidString.lowercased().prefix(8)), task.kind,
                    task.state.rawValue, "\(task.attempts)/\(task.maxAttempts)", iso(task.createdAt),
                    ago(task.updatedAt, now: now),
                ])
            }
            return table.rendered
        case .task(let task):
            var lines = [
                "id:          \(task.id.uuidString.lowercased())",
                "node:        \(task.nodeID.uuidString.lowercased())",
                "kind:        \(task.kind)",
                "state:       \(task.state.rawValue)",
                "attempts:    \(task.attempts) of \(task.maxAttempts)",
                "created:     \(iso(task.createdAt))",
                "updated:     \(iso(task.updatedAt))",
                "spec:        \(task.spec.jsonText)",
            ]
            if let finishedAt = task.finishedAt { lines.append("finished:    \(iso(finishedAt))") }
            if let leaseExpiresAt = task.leaseExpiresAt { lines.append("lease until: \(iso(leaseExpiresAt))") }
            if let notBefore = task.notBefore { lines.append("retry after: \(iso(notBefore))") }
            if let progress = task.progress { lines.append("progress:    \(progress.jsonText)") }
            if let error = task.error { lines.append("error:       \(error.code): \(error.message)") }
            if let result = task.result { lines.append("result:      \(result.jsonText)") }
            return lines.joined(separator: "\n")
        case .modules(let modules):
            var table = Table(["NAME", "VERSION", "IMAGE", "OBJECTS", "SIZE", "SERVICES", "PUBLISHED"])
            for module in modules {
                table.append([
                    module.name, module.version, String(module.imageDigest.prefix(12)), "\(module.objects)",
                    bytes(module.objectBytes + module.imageSize), module.services.joined(separator: ","),
                    iso(module.publishedAt),
                ])
            }
            return table.rendered
        case .createdToken(let created):
            return """
                Join token \(created.id) created (expires \(iso(created.expiresAt)), \
                uses: \(created.usesAllowed.map(String.init) ?? "unlimited")).
                Run this on the node to join it:

                  \(created.joinCommand)
                """
        }
    }

    static func iso(_ date: Date) -> String { date.formatted(.iso8601) }

    static func labels(_ labels: [String: String]) -> String {
        labels.isEmpty ? "-" : labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    static func ago(_ date: Date?, now: Date) -> String {
        guard let date else { return "never" }
        let seconds = max(0, Int(now.timeIntervalSince(date)))
        if seconds < 60 { return "\(seconds)s ago" }
        if seconds < 3600 { return "\(seconds / 60)m ago" }
        if seconds < 86400 { return "\(seconds / 3600)h ago" }
        return "\(seconds / 86400)d ago"
    }

    static func bytes(_ value: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(value)
        var i = 0
        while v >= 1024, i < units.count - 1 {
            v /= 1024
            i += 1
        }
        return i == 0 ? "\(value) B" : String(format: "%.1f %@", v, units[i])
    }
}
