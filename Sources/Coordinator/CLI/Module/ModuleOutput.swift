import ArgumentParser
import Foundation
import Shared

/// Output shared by the `muster module` commands: JSON encoding and error reports.
enum ModuleOutput {
    /// The JSON form of an error: `{"error": {code, message, hint, issues: [{file, field, line, reason}]}}`.
    struct ErrorBody: Codable {
        struct Issue: Codable {
            var file: String
            var field: String
            var line: Int?
            var reason: String
        }
        var code: String
        var message: String
        var hint: String?
        var issues: [Issue]?
    }

    /// Prints `error` (JSON on stdout with `json`, text on stderr otherwise) and returns the exit code to throw.
    static func report(_ error: any Error, json: Bool) -> ExitCode {
        let (muster, issues) = classify(error)
        if json {
            print(renderError(muster, issues: issues))
        } else {
            FileHandle.standardError.write(Data("error: \(muster.description)\n".utf8))
        }
        return ExitCode(muster.code.exitCode)
    }

    static func classify(_ error: any Error) -> (error: MusterError, issues: [ModuleManifest.Issue]) {
        switch error {
        case let invalid as ModuleManifest.ValidationError: (invalid.musterError, invalid.issues)
        case let muster as MusterError: (muster, [])
        default: (MusterError(.internal, "\(error)", cause: UnderlyingError(error)), [])
        }
    }

    static func renderError(_ error: MusterError, issues: [ModuleManifest.Issue]) -> String {
        let body = ErrorBody(
            code: error.code.wireName, message: issues.isEmpty ? error.message : "module is invalid",
            hint: error.hint,
            issues: issues.isEmpty
                ? nil : issues.map { .init(file: $0.file, field: $0.field, line: $0.line, reason: $0.reason) })
        return (try? jsonString(["error": body])) ?? #"{"error":{"code":"INTERNAL"}}"#
    }

    /// Indented JSON with sorted keys.
    static func jsonString<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
