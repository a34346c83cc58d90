/// What a task does on its node (DESIGN §4). Unknown kinds are refused when a task is created.
public enum TaskKind: String, Codable, Sendable, CaseIterable {
    case attachModule
    case detachModule
    case mountVolume
    case unmountVolume
    case syncTree
    case migrateSQLite
    case rewriteJSONPaths
    case editConfig
    case controlUnit
    case checkHealth
    case backupPostgres
    case restorePostgres
    case precheck
    case backup

    /// Parses a kind name.
    /// - Throws: ``MusterError`` `.invalidInput` naming the known kinds.
    public init(validating name: String) throws {
        guard let kind = TaskKind(rawValue: name) else {
            throw MusterError(
                .invalidInput, "unknown task kind '\(name)'",
                hint: "known kinds: \(TaskKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = kind
    }
}
