/// The figures of rsync's `--stats` block that say what a run actually did.
///
/// ```
/// Number of files: 31 (reg: 30, dir: 1)
/// Number of regular files transferred: 0
/// Total file size: 46500000 bytes
/// Total transferred file size: 0 bytes
/// ```
/// With `--no-h` numbers are plain digits (rsync ≥ 3.1 may still group them with `,`; commas are ignored).
struct RsyncStats: Sendable, Equatable, Codable {
    var files: Int?
    var createdFiles: Int?
    var deletedFiles: Int?
    var transferredFiles: Int?
    var totalFileBytes: UInt64?
    var transferredFileBytes: UInt64?
    var literalBytes: UInt64?

    /// Folds one stdout record in; returns `false` for records that are not a stats line.
    @discardableResult
    mutating func absorb(_ record: String) -> Bool {
        guard let colon = record.firstIndex(of: ":") else { return false }
        let key = record[..<colon]
        let value = record[record.index(after: colon)...].drop(while: { $0 == " " })
        let digits = value.prefix(while: { $0.isNumber || $0 == "," }).filter { $0 != "," }
        guard let number = UInt64(digits) else { return false }
        switch key {
        case "Number of files": files = Int(number)
        case "Number of created files": createdFiles = Int(number)
        case "Number of deleted files": deletedFiles = Int(number)
        case "Number of regular files transferred": transferredFiles = Int(number)
        case "Total file size": totalFileBytes = number
        case "Total transferred file size": transferredFileBytes = number
        case "Literal data": literalBytes = number
        default: return false
        }
        return true
    }
}
