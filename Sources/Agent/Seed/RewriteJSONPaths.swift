import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// `rewriteJSONPaths`: rewrites absolute path prefixes inside JSON files (e.g. one file per repository alias that
/// points into `golden-repos/`), in place and byte-preserving — only the changed string values are re-encoded.
///
/// All-or-nothing across files: every file is read and parsed and every edit computed before the first write; an
/// invalid JSON file, a pattern matching nothing or an unreadable file fails the task with nothing changed. Each
/// changed file is first copied to `<file><backupSuffix>` (once: a re-run keeps the original backup), then replaced
/// atomically with the same mode and owner. Running it twice equals running it once. `restore: true` puts the
/// backups back (rollback) and leaves them in place.
///
/// Spec: `{"files": ["/srv/app/aliases/*.json"], "fields": ["/path", "/snapshots/*/path"],
/// "rewrites": [{"from": "/srv/app/golden-repos", "to": "/mnt/shared/golden-repos"}], "backupSuffix": ".pre-cluster",
/// "dryRun": false, "restore": false}`. Without `fields` every string value is a candidate.
public struct RewriteJSONPaths: TaskHandler {
    public struct Spec: Codable, Sendable, Equatable {
        public var files: [String]
        public var fields: [String]?
        public var rewrites: [PathPrefixRewrite]
        public var backupSuffix: String?
        public var dryRun: Bool?
        public var restore: Bool?

        public init(
            files: [String], fields: [String]? = nil, rewrites: [PathPrefixRewrite], backupSuffix: String? = nil,
            dryRun: Bool? = nil, restore: Bool? = nil
        ) {
            self.files = files
            self.fields = fields
            self.rewrites = rewrites
            self.backupSuffix = backupSuffix
            self.dryRun = dryRun
            self.restore = restore
        }
    }

    public struct FileReport: Codable, Sendable, Equatable {
        public var path: String
        public var rewritten: Int
        /// Up to three changes, `pointer: old → new`, for the operator.
        public var examples: [String]
        public var backup: String?
    }

    public struct Report: Codable, Sendable, Equatable {
        public var files: [FileReport]
        public var valuesRewritten: Int
        public var filesChanged: Int
        public var dryRun: Bool
        public var restored: Bool
    }

    public init() {}

    public func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        try JSONValue(encoding: try apply(try spec.decode(Spec.self)))
    }

    public func apply(_ spec: Spec) throws -> Report {
        let suffix = try BackedUpFile.suffix(spec.backupSuffix)
        let pointers = try (spec.fields ?? []).map { try JSONPointer($0) }
        let rewrites = try spec.rewrites.enumerated().map { try $1.validated(field: "rewrites[\($0)]") }
        guard !rewrites.isEmpty else { throw MusterError(.invalidInput, "rewrites: at least one from → to is needed") }
        let paths = try Self.expand(spec.files, excludingSuffix: suffix)

        if spec.restore == true {
            return try restore(paths, suffix: suffix, dryRun: spec.dryRun == true)
        }

        // Pass 1: read, parse and plan every file; nothing is written if any file is refused.
        var plans: [(path: String, bytes: [UInt8], edits: [(range: Range<Int>, text: String)], report: FileReport)] = []
        for path in paths {
            let bytes = try BackedUpFile.read(path)
            let scan: JSONScan
            do {
                scan = try JSONScan(bytes)
            } catch let error as MusterError {
                throw MusterError(.invalidInput, "\(path): \(error.message); no file was changed")
            }
            var edits: [(range: Range<Int>, text: String)] = []
            var examples: [String] = []
            for string in scan.strings where pointers.isEmpty || pointers.contains(where: { $0.matches(string.path) }) {
                guard let rewritten = rewrites.lazy.compactMap({ $0.apply(to: string.value) }).first,
                    rewritten != string.value
                else { continue }
                edits.append((string.range, JSONScan.encode(string: rewritten)))
                if examples.count < 3 {
                    examples.append(
                        "/\(string.path.map(\.description).joined(separator: "/")): \(string.value) → \(rewritten)")
                }
            }
            plans.append(
                (path, bytes, edits, FileReport(path: path, rewritten: edits.count, examples: examples, backup: nil)))
        }

        // Pass 2: back up and replace the files that change.
        var reports: [FileReport] = []
        for var plan in plans {
            if !plan.edits.isEmpty, spec.dryRun != true {
                try BackedUpFile.replace(
                    plan.path, original: plan.bytes, with: JSONScan.splice(plan.bytes, plan.edits), suffix: suffix)
                plan.report.backup = plan.path + suffix
            }
            reports.append(plan.report)
        }
        return Report(
            files: reports, valuesRewritten: reports.reduce(0) { $0 + $1.rewritten },
            filesChanged: reports.filter { $0.rewritten > 0 }.count, dryRun: spec.dryRun == true, restored: false)
    }

    /// Puts `<file><suffix>` back over every file that has one (byte for byte, same mode and owner).
    private func restore(_ paths: [String], suffix: String, dryRun: Bool) throws -> Report {
        var reports: [FileReport] = []
        for path in paths {
            let changed = try BackedUpFile.restore(path, suffix: suffix, dryRun: dryRun)
            reports.append(
                FileReport(
                    path: path, rewritten: changed == true ? 1 : 0, examples: [],
                    backup: changed == nil ? nil : path + suffix))
        }
        return Report(
            files: reports, valuesRewritten: 0, filesChanged: reports.filter { $0.rewritten > 0 }.count,
            dryRun: dryRun, restored: true)
    }

    // MARK: - Files

    /// Expands glob patterns (glob(3)); each must match at least one regular file. Backups are never inputs.
    static func expand(_ patterns: [String], excludingSuffix suffix: String) throws -> [String] {
        guard !patterns.isEmpty else {
            throw MusterError(.invalidInput, "files: at least one path or pattern is needed")
        }
        var seen = Set<String>()
        var paths: [String] = []
        for pattern in patterns {
            guard pattern.hasPrefix("/") else {
                throw MusterError(.invalidInput, "files: '\(pattern)' is not an absolute path or pattern")
            }
            var result = glob_t()
            defer { globfree(&result) }
            let status = glob(pattern, GLOB_ERR, nil, &result)
            guard status == 0 || status == GLOB_NOMATCH else {
                throw MusterError(.io, "files: cannot expand '\(pattern)' (glob error \(status))")
            }
            var matched = 0
            for index in 0..<Int(result.gl_pathc) {
                guard let cString = result.gl_pathv[index] else { continue }
                let path = String(cString: cString)
                if path.hasSuffix(suffix) { continue }
                var info = stat()
                guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
                matched += 1
                if seen.insert(path).inserted { paths.append(path) }
            }
            guard matched > 0 else {
                throw MusterError(.notFound, "files: '\(pattern)' matches no regular file; no file was changed")
            }
        }
        return paths
    }

}
