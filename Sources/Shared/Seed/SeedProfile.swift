import Foundation
import Yams

/// `seed.yaml`: what `muster seed-cluster` needs to know about a standalone service to make it the first node of a
/// cluster (DESIGN §8, docs/seed-profile.md). Loaded with ``load(path:)``, which validates every field and names
/// the field and the problem.
public struct SeedProfile: Codable, Sendable, Equatable {
    /// The standalone service.
    public struct Service: Codable, Sendable, Equatable {
        /// Its systemd unit, e.g. `app.service`.
        public var unit: String
        /// Polled after the restart until it answers 2xx.
        public var healthURL: String
        /// How long the service may take to become healthy after the restart (default 60).
        public var healthTimeoutSeconds: Int?
    }

    /// One SQLite database to move into PostgreSQL.
    public struct Database: Codable, Sendable, Equatable {
        public var path: String
        /// `postgres://…`; omitted: the coordinator's own PostgreSQL, database `muster_<name>` it creates.
        public var target: String?
        public var schema: String?
        public var tables: [String]?
        /// `table.column:type[:using]`, as `muster-agent migrate-sqlite --cast`.
        public var casts: [String]?
    }

    /// A local directory to copy onto the shared volume.
    public struct Directory: Codable, Sendable, Equatable {
        public var source: String
        /// Relative to the volume's mount path.
        public var destination: String
        public var exclude: [String]?
    }

    /// Absolute paths inside JSON files to rewrite.
    public struct Rewrite: Codable, Sendable, Equatable {
        /// Absolute paths or glob patterns.
        public var files: [String]
        /// JSON pointers (`*` matches any member or index); omitted: every string value.
        public var fields: [String]?
        public var prefixes: [PathPrefixRewrite]
    }

    /// Edits of the service's config for cluster mode.
    public struct Config: Codable, Sendable, Equatable {
        public enum Format: String, Codable, Sendable {
            case json, yaml, env
        }
        public var file: String
        public var format: Format
        /// Values the standalone config must hold (checked before anything changes).
        public var expect: [String: JSONValue]?
        public var set: [String: JSONValue]
    }

    /// The shared volume the directories go to.
    public struct Volume: Codable, Sendable, Equatable {
        public var name: String
        public var mountPath: String
    }

    /// An HTTP request whose answer proves the cluster-mode service serves the migrated data.
    public struct Check: Codable, Sendable, Equatable {
        public var name: String
        public var url: String
        /// Expected status (default 200).
        public var status: Int?
        /// Expected values in the JSON answer, by JSON pointer.
        public var json: [String: JSONValue]?
    }

    public var service: Service
    public var databases: [Database]?
    public var directories: [Directory]?
    public var rewrites: [Rewrite]?
    public var config: Config?
    public var volume: Volume?
    public var checks: [Check]?
    /// `NAME[@VERSION]` of the module joining nodes get.
    public var module: String?

    /// Reads and validates a profile.
    ///
    /// - Throws: ``MusterError`` `.notFound` for a missing file, `.invalidInput` naming the field and the problem.
    public static func load(path: String) throws -> SeedProfile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MusterError(.notFound, "cannot read the seed profile \(path)")
        }
        return try parse(String(decoding: data, as: UTF8.self), source: path)
    }

    public static func parse(_ text: String, source: String) throws -> SeedProfile {
        let profile: SeedProfile
        do {
            profile = try YAMLDecoder().decode(SeedProfile.self, from: text)
        } catch let error as DecodingError {
            throw MusterError(.invalidInput, "\(source): \(Self.describe(error))")
        } catch {
            throw MusterError(.invalidInput, "\(source): not valid YAML: \(error)")
        }
        try checkKeys(text, source: source)
        try profile.validate(source: source)
        return profile
    }

    /// The fields each part of a profile may have; anything else (a typo such as `healthUrl`) is refused rather
    /// than silently ignored.
    private static let knownKeys: [String: Set<String>] = [
        "": ["service", "databases", "directories", "rewrites", "config", "volume", "checks", "module"],
        "service": ["unit", "healthURL", "healthTimeoutSeconds"],
        "databases[]": ["path", "target", "schema", "tables", "casts"],
        "directories[]": ["source", "destination", "exclude"],
        "rewrites[]": ["files", "fields", "prefixes"],
        "rewrites[].prefixes[]": ["from", "to"],
        "config": ["file", "format", "expect", "set"],
        "volume": ["name", "mountPath"],
        "checks[]": ["name", "url", "status", "json"],
    ]

    private static func checkKeys(_ text: String, source: String) throws {
        guard let root = try? Yams.compose(yaml: text) else { return }
        func walk(_ node: Node, shape: String, field: String) throws {
            switch node {
            case .mapping(let mapping):
                guard let allowed = knownKeys[shape] else { return }
                for (key, value) in mapping {
                    let name = key.string ?? "?"
                    let childField = field.isEmpty ? name : "\(field).\(name)"
                    guard allowed.contains(name) else {
                        throw MusterError(
                            .invalidInput,
                            "\(source): \(childField): unknown field (known here: \(allowed.sorted().joined(separator: ", ")))")
                    }
                    try walk(value, shape: shape.isEmpty ? name : "\(shape).\(name)", field: childField)
                }
            case .sequence(let sequence):
                for (index, element) in sequence.enumerated() {
                    try walk(element, shape: "\(shape)[]", field: "\(field)[\(index)]")
                }
            default:
                return
            }
        }
        try walk(root, shape: "", field: "")
    }

    /// Checks every field; the first problem is thrown with the field's path.
    public func validate(source: String) throws {
        func fail(_ field: String, _ problem: String) -> MusterError {
            MusterError(.invalidInput, "\(source): \(field): \(problem)")
        }
        func absolute(_ field: String, _ path: String) throws {
            guard path.hasPrefix("/") else { throw fail(field, "'\(path)' is not an absolute path") }
            guard !path.split(separator: "/").contains(".."), !path.contains("\u{0}") else {
                throw fail(field, "'\(path)' must not contain '..' or NUL")
            }
        }
        func httpURL(_ field: String, _ text: String) throws {
            guard let url = URLComponents(string: text), url.scheme == "http" || url.scheme == "https",
                url.host?.isEmpty == false
            else { throw fail(field, "'\(text)' is not an http(s) URL") }
        }

        let unitPattern = #/^[A-Za-z0-9:_.@\-]+\.service$/#
        guard service.unit.wholeMatch(of: unitPattern) != nil else {
            throw fail("service.unit", "'\(service.unit)' is not a service unit name (e.g. app.service)")
        }
        try httpURL("service.healthURL", service.healthURL)
        if let timeout = service.healthTimeoutSeconds, !(1...3600).contains(timeout) {
            throw fail("service.healthTimeoutSeconds", "\(timeout) is outside 1…3600")
        }

        for (index, database) in (databases ?? []).enumerated() {
            let field = "databases[\(index)]"
            try absolute("\(field).path", database.path)
            if let target = database.target, !(target.hasPrefix("postgres://") || target.hasPrefix("postgresql://")) {
                throw fail("\(field).target", "must be a postgres:// URL")
            }
            if let schema = database.schema, schema.isEmpty || schema.count > 63 {
                throw fail("\(field).schema", "must be 1–63 characters")
            }
            for (castIndex, cast) in (database.casts ?? []).enumerated() {
                let parts = cast.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                guard parts.count >= 2, parts[0].split(separator: ".").count == 2, !parts[1].isEmpty else {
                    throw fail("\(field).casts[\(castIndex)]", "'\(cast)' is not table.column:type[:using]")
                }
            }
        }
        var destinations = Set<String>()
        for (index, directory) in (directories ?? []).enumerated() {
            let field = "directories[\(index)]"
            try absolute("\(field).source", directory.source)
            guard !directory.destination.hasPrefix("/"), !directory.destination.isEmpty,
                !directory.destination.split(separator: "/").contains("..")
            else {
                throw fail(
                    "\(field).destination", "'\(directory.destination)' must be a relative path inside the volume")
            }
            guard destinations.insert(directory.destination).inserted else {
                throw fail("\(field).destination", "'\(directory.destination)' is used twice")
            }
        }
        if !(directories ?? []).isEmpty, volume == nil {
            throw fail("volume", "directories are copied to a shared volume, but no volume is named")
        }
        if let volume {
            guard volume.name.wholeMatch(of: #/^[a-z0-9][a-z0-9\-]{0,62}$/#) != nil else {
                throw fail("volume.name", "'\(volume.name)' must be lowercase letters, digits and '-'")
            }
            try absolute("volume.mountPath", volume.mountPath)
        }
        for (index, rewrite) in (rewrites ?? []).enumerated() {
            let field = "rewrites[\(index)]"
            guard !rewrite.files.isEmpty else { throw fail("\(field).files", "at least one file or pattern") }
            for (fileIndex, file) in rewrite.files.enumerated() { try absolute("\(field).files[\(fileIndex)]", file) }
            for (fieldIndex, pointer) in (rewrite.fields ?? []).enumerated() {
                do {
                    _ = try JSONPointer(pointer)
                } catch let error as MusterError {
                    throw fail("\(field).fields[\(fieldIndex)]", error.message)
                }
            }
            guard !rewrite.prefixes.isEmpty else { throw fail("\(field).prefixes", "at least one from → to") }
            for (prefixIndex, prefix) in rewrite.prefixes.enumerated() {
                do {
                    _ = try prefix.validated(field: "\(field).prefixes[\(prefixIndex)]")
                } catch let error as MusterError {
                    throw MusterError(.invalidInput, "\(source): \(error.message)")
                }
            }
        }
        if let config {
            try absolute("config.file", config.file)
            guard !config.set.isEmpty else { throw fail("config.set", "no keys to set") }
            for key in Array(config.set.keys) + Array((config.expect ?? [:]).keys) where key.hasPrefix("/") {
                do {
                    guard let path = try JSONPointer(key).objectPath, !path.isEmpty else {
                        throw fail("config.set", "'\(key)': wildcards are not keys")
                    }
                } catch let error as MusterError where !error.message.hasPrefix(source) {
                    throw fail("config", "'\(key)': \(error.message)")
                }
            }
        }
        for (index, check) in (checks ?? []).enumerated() {
            let field = "checks[\(index)]"
            guard !check.name.isEmpty else { throw fail("\(field).name", "must not be empty") }
            try httpURL("\(field).url", check.url)
            if let status = check.status, !(100...599).contains(status) {
                throw fail("\(field).status", "\(status) is not an HTTP status")
            }
            for pointer in (check.json ?? [:]).keys {
                do {
                    _ = try JSONPointer(pointer)
                } catch let error as MusterError {
                    throw fail("\(field).json", error.message)
                }
            }
        }
        if let module, module.wholeMatch(of: #/^[a-z0-9][a-z0-9\-]*(@[A-Za-z0-9.\-+_]+)?$/#) == nil {
            throw fail("module", "'\(module)' is not NAME[@VERSION]")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let rendered = context.codingPath.map { key in
                key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)"
            }.joined()
            return rendered.hasPrefix(".") ? String(rendered.dropFirst()) : (rendered.isEmpty ? "(top level)" : rendered)
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context)
            return "\(parent == "(top level)" ? "" : parent + ".")\(key.stringValue): missing (required)"
        case .typeMismatch(let type, let context):
            return "\(path(context)): expected \(type)"
        case .valueNotFound(let type, let context):
            return "\(path(context)): expected \(type), found nothing"
        case .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
