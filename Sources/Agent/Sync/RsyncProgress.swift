/// One `--info=progress2 --no-h` record of rsync, e.g.
/// `  14000000  17%   40.99MB/s    0:00:00 (xfr#7, to-chk=35/43)`.
///
/// rsync rewrites the record in place with `\r`; ``RsyncOutputSplitter`` cuts the stream into records and
/// ``parse(_:)`` turns one into a value. The first record of a transfer often lacks the `(xfr#…)` part, and
/// the time column is the estimated time left while copying but the elapsed time on the final record
/// (``isComplete``); rsync prints `??:??:??` when it cannot estimate.
struct RsyncProgress: Sendable, Equatable, Codable {
    /// Bytes transferred so far (of the files that needed a transfer).
    var bytes: UInt64
    /// Percent of the total as rsync computes it (0–100).
    var percent: Int
    /// Current rate in bytes per second.
    var bytesPerSecond: Double
    /// Seconds: estimated time left, or elapsed time on the final record; `nil` when rsync printed `??:??:??`.
    var seconds: Int?
    /// Files transferred so far (`xfr#N`), `nil` on records without it.
    var transferredFiles: Int?
    /// Entries of the file list still to check (`to-chk=R/…`), `nil` on records without it.
    var remainingToCheck: Int?
    /// Entries of the whole file list (`to-chk=…/T`), `nil` on records without it.
    var totalToCheck: Int?

    /// The final record: every entry of the file list checked.
    var isComplete: Bool { remainingToCheck == 0 && totalToCheck != nil }

    /// Entries of the file list checked so far.
    var checkedFiles: Int? {
        guard let remainingToCheck, let totalToCheck else { return nil }
        return totalToCheck - remainingToCheck
    }

    /// Whether `record` starts like a progress record (blanks, then a digit), which no stats line or blank line
    /// does: the cheap test for records that ``parse(_:)`` is not asked about.
    static func looksLikeRecord(_ record: String) -> Bool {
        for byte in record.utf8 where byte != UInt8(ascii: " ") && byte != UInt8(ascii: "\t") {
            return byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
        }
        return false
    }

    /// Parses one record; `nil` for anything that is not a progress record (stats lines, blank lines).
    static func parse(_ record: some StringProtocol) -> RsyncProgress? {
        let fields = Substring(record).split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 4 else { return nil }
        guard let bytes = UInt64(fields[0]) else { return nil }
        guard fields[1].hasSuffix("%"), let percent = Int(fields[1].dropLast()), (0...100).contains(percent) else {
            return nil
        }
        guard let rate = parseRate(fields[2]) else { return nil }
        let seconds: Int?
        if fields[3].hasPrefix("??") {
            seconds = nil
        } else {
            guard let parsed = parseTime(fields[3]) else { return nil }
            seconds = parsed
        }
        var progress = RsyncProgress(
            bytes: bytes, percent: percent, bytesPerSecond: rate, seconds: seconds, transferredFiles: nil,
            remainingToCheck: nil, totalToCheck: nil)
        guard fields.count > 4 else { return progress }
        // "(xfr#7," "to-chk=35/43)" — rsync 3.1 said "ir-chk" while the incremental list was still growing.
        let tail = fields[4...].joined(separator: " ")
        guard tail.hasPrefix("("), tail.hasSuffix(")") else { return nil }
        for part in tail.dropFirst().dropLast().split(separator: ",") {
            let item = part.trimmingCharactersSpace()
            if item.hasPrefix("xfr#") {
                guard let count = Int(item.dropFirst(4)) else { return nil }
                progress.transferredFiles = count
            } else if item.hasPrefix("to-chk=") || item.hasPrefix("ir-chk=") {
                let numbers = item.dropFirst(7).split(separator: "/")
                guard numbers.count == 2, let remaining = Int(numbers[0]), let total = Int(numbers[1]) else {
                    return nil
                }
                progress.remainingToCheck = remaining
                progress.totalToCheck = total
            } else {
                return nil
            }
        }
        return progress
    }

    /// `40.99MB/s`, `0.00kB/s`, `123.45GB/s`, `512B/s` (units of 1024 with `--no-h`, as rsync prints them).
    private static func parseRate(_ field: Substring) -> Double? {
        guard field.hasSuffix("/s") else { return nil }
        var number = field.dropLast(2)
        var scale = 1.0
        let units: [(String, Double)] = [
            ("kB", 1024), ("KB", 1024), ("MB", 1_048_576), ("GB", 1_073_741_824), ("TB", 1_099_511_627_776),
            ("PB", 1_125_899_906_842_624),
            ("B", 1),
        ]
        for (suffix, factor) in units where number.hasSuffix(suffix) {
            number = number.dropLast(suffix.count)
            scale = factor
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
        return value * scale
    }

    /// `H:MM:SS`, hours right-aligned and of any width (rsync's `%4u:%02u:%02u`).
    private static func parseTime(_ field: Substring) -> Int? {
        let parts = field.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var total = 0
        for part in parts {
            guard let value = Int(part), value >= 0 else { return nil }
            total = total * 60 + value
        }
        return total
    }
}

extension Substring {
    fileprivate func trimmingCharactersSpace() -> Substring {
        var result = self
        while result.first == " " { result = result.dropFirst() }
        while result.last == " " { result = result.dropLast() }
        return result
    }
}

/// Cuts rsync's stdout into records at `\r` and `\n`, across buffer boundaries.
///
/// Bytes are kept as bytes until a record is complete so a multi-byte character split between two reads
/// is not mangled; records are decoded as UTF-8 with replacement (progress records are ASCII).
struct RsyncOutputSplitter: Sendable {
    private var pending: [UInt8] = []
    /// A record longer than this is cut (rsync's records are < 100 bytes; this bounds memory on garbage).
    private let maximumRecordLength: Int

    init(maximumRecordLength: Int = 64 * 1024) {
        self.maximumRecordLength = maximumRecordLength
    }

    /// Feeds bytes; returns the records completed by them (empty records dropped).
    mutating func feed(_ bytes: some Sequence<UInt8>) -> [String] {
        var records: [String] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") {
                if !pending.isEmpty { records.append(String(decoding: pending, as: UTF8.self)) }
                pending.removeAll(keepingCapacity: true)
            } else {
                pending.append(byte)
                if pending.count >= maximumRecordLength {
                    records.append(String(decoding: pending, as: UTF8.self))
                    pending.removeAll(keepingCapacity: true)
                }
            }
        }
        return records
    }

    /// The unterminated rest at end of stream, if any.
    mutating func finish() -> String? {
        defer { pending.removeAll() }
        return pending.isEmpty ? nil : String(decoding: pending, as: UTF8.self)
    }
}
