/// Parsing and formatting of timestamps as microseconds since the Unix epoch, UTC.
///
/// The formatted form is exactly what PostgreSQL prints for a `timestamptz` with `TimeZone=UTC` and
/// `DateStyle=ISO`: `2023-01-01 00:00:00.123+00` (fraction without trailing zeros). The migration sends this
/// form in COPY and uses it for the checksum, so both sides render the same bytes.
enum Timestamps {
    static let minMicros: Int64 = -62_135_596_800_000_000  // 0001-01-01 00:00:00 UTC
    static let maxMicros: Int64 = 253_402_300_799_999_999  // 9999-12-31 23:59:59.999999 UTC

    /// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    static func days(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// The civil date of a day count (`civil_from_days`).
    static func civil(days z0: Int) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    static func daysInMonth(_ y: Int, _ m: Int) -> Int {
        switch m {
        case 2: return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Parses ISO-8601 / SQLite datetime text: `YYYY-MM-DD`, then optionally `T` or a space, `HH:MM[:SS[.f…]]`,
    /// then optionally `Z` or `±HH[:MM]`. Zone-less values are at `defaultOffset` seconds east of UTC.
    /// Fractions beyond microseconds are rounded half up. Returns `nil` for anything else.
    static func parseISO(_ p: UnsafeBufferPointer<UInt8>, defaultOffset: Int) -> Int64? {
        var i = 0
        let n = p.count
        @inline(__always) func digits(_ count: Int) -> Int? {
            guard i + count <= n else { return nil }
            var v = 0
            for k in 0..<count {
                let c = p[i + k]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            i += count
            return v
        }
        @inline(__always) func expect(_ c: UInt8) -> Bool {
            guard i < n, p[i] == c else { return false }
            i += 1
            return true
        }
        guard let year = digits(4), expect(UInt8(ascii: "-")), let month = digits(2), expect(UInt8(ascii: "-")),
            let day = digits(2), year >= 1, (1...12).contains(month), day >= 1, day <= daysInMonth(year, month)
        else { return nil }
        var hour = 0, minute = 0, second = 0
        var micros: Int64 = 0
        var offset = defaultOffset
        if i < n, p[i] == UInt8(ascii: "T") || p[i] == UInt8(ascii: " ") || p[i] == UInt8(ascii: "t") {
            i += 1
            guard let h = digits(2), expect(UInt8(ascii: ":")), let m = digits(2), h <= 23, m <= 59 else { return nil }
            hour = h
            minute = m
            if expect(UInt8(ascii: ":")) {
                guard let s = digits(2), s <= 59 else { return nil }
                second = s
                if expect(UInt8(ascii: ".")) {
                    var scale: Int64 = 100_000
                    var count = 0
                    var roundUp = false
                    while i < n, p[i] >= 48, p[i] <= 57 {
                        let d = Int64(p[i] - 48)
                        if count < 6 {
                            micros += d * scale
                            scale /= 10
                        } else if count == 6 {
                            roundUp = d >= 5
                        }
                        count += 1
                        i += 1
                    }
                    guard count > 0 else { return nil }
                    if roundUp { micros += 1 }
                }
            }
            while i < n, p[i] == UInt8(ascii: " ") { i += 1 }
            if i < n {
                if p[i] == UInt8(ascii: "Z") || p[i] == UInt8(ascii: "z") {
                    offset = 0
                    i += 1
                } else {
                    guard let off = Conversion.parseOffset(Array(p[i...])) else { return nil }
                    offset = off
                    i = n
                }
            }
        }
        guard i == n else { return nil }
        let secs = Int64(days(year: year, month: month, day: day)) * 86_400 + Int64(hour * 3600 + minute * 60 + second)
            - Int64(offset)
        let total = secs * 1_000_000 + micros
        guard total >= minMicros, total <= maxMicros else { return nil }
        return total
    }

    /// Parses a strict `YYYY-MM-DD`; returns days since the epoch.
    static func parseDate(_ p: UnsafeBufferPointer<UInt8>) -> Int? {
        guard p.count == 10, p[4] == UInt8(ascii: "-"), p[7] == UInt8(ascii: "-") else { return nil }
        func num(_ a: Int, _ b: Int) -> Int? {
            var v = 0
            for k in a..<b {
                guard p[k] >= 48, p[k] <= 57 else { return nil }
                v = v * 10 + Int(p[k] - 48)
            }
            return v
        }
        guard let y = num(0, 4), let m = num(5, 7), let d = num(8, 10), y >= 1, (1...12).contains(m), d >= 1,
            d <= daysInMonth(y, m)
        else { return nil }
        return days(year: y, month: m, day: d)
    }

    /// Appends PostgreSQL's ISO rendering of `micros` (UTC) to `out`.
    static func format(micros: Int64, into out: inout [UInt8]) {
        var secs = micros / 1_000_000
        var frac = micros % 1_000_000
        if frac < 0 {
            frac += 1_000_000
            secs -= 1
        }
        var days = secs / 86_400
        var sod = secs % 86_400
        if sod < 0 {
            sod += 86_400
            days -= 1
        }
        let (y, m, d) = civil(days: Int(days))
        appendDate(y, m, d, into: &out)
        out.append(UInt8(ascii: " "))
        append2(Int(sod / 3600), into: &out)
        out.append(UInt8(ascii: ":"))
        append2(Int(sod % 3600 / 60), into: &out)
        out.append(UInt8(ascii: ":"))
        append2(Int(sod % 60), into: &out)
        if frac != 0 {
            out.append(UInt8(ascii: "."))
            var digits = 6
            var f = frac
            while f % 10 == 0 {
                f /= 10
                digits -= 1
            }
            var div: Int64 = 100_000
            for _ in 0..<digits {
                out.append(UInt8(48 + (frac / div) % 10))
                div /= 10
            }
        }
        out.append(contentsOf: [UInt8(ascii: "+"), UInt8(ascii: "0"), UInt8(ascii: "0")])
    }

    /// Appends `YYYY-MM-DD` for a day count.
    static func formatDate(days: Int, into out: inout [UInt8]) {
        let (y, m, d) = civil(days: days)
        appendDate(y, m, d, into: &out)
    }

    private static func appendDate(_ y: Int, _ m: Int, _ d: Int, into out: inout [UInt8]) {
        out.append(UInt8(48 + y / 1000 % 10))
        out.append(UInt8(48 + y / 100 % 10))
        out.append(UInt8(48 + y / 10 % 10))
        out.append(UInt8(48 + y % 10))
        out.append(UInt8(ascii: "-"))
        append2(m, into: &out)
        out.append(UInt8(ascii: "-"))
        append2(d, into: &out)
    }

    @inline(__always)
    private static func append2(_ v: Int, into out: inout [UInt8]) {
        out.append(UInt8(48 + v / 10))
        out.append(UInt8(48 + v % 10))
    }
}
