/// Validates JSON text and renders it exactly as PostgreSQL prints the equivalent `jsonb` value.
///
/// jsonb drops insignificant whitespace, keeps the last of duplicate keys, orders keys by length then bytes,
/// prints `{"a": 1, "b": [1, 2]}`, stores numbers as `numeric` (so `1e2` prints `100`), and rejects `\u0000`.
/// Rendering the same way on the SQLite side lets the checksum compare `jsonb::text` with the source.
struct JSONCanonical {
    private let p: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var depth = 0

    /// Returns the canonical rendering, or `nil` when the text is not valid JSON (or not storable in jsonb).
    static func canonicalize(_ p: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var parser = JSONCanonical(p: p)
        var out: [UInt8] = []
        out.reserveCapacity(p.count + 16)
        guard parser.value(into: &out) else { return nil }
        parser.skipWhitespace()
        guard parser.i == p.count else { return nil }
        return out
    }

    private init(p: UnsafeBufferPointer<UInt8>) { self.p = p }

    private mutating func skipWhitespace() {
        while i < p.count, p[i] == 0x20 || p[i] == 0x09 || p[i] == 0x0A || p[i] == 0x0D { i += 1 }
    }

    private mutating func value(into out: inout [UInt8]) -> Bool {
        skipWhitespace()
        guard i < p.count else { return false }
        switch p[i] {
        case UInt8(ascii: "{"): return object(into: &out)
        case UInt8(ascii: "["): return array(into: &out)
        case UInt8(ascii: "\""):
            guard let s = string() else { return false }
            Self.appendQuoted(s, into: &out)
            return true
        case UInt8(ascii: "t"): return literal("true", into: &out)
        case UInt8(ascii: "f"): return literal("false", into: &out)
        case UInt8(ascii: "n"): return literal("null", into: &out)
        default: return number(into: &out)
        }
    }

    private mutating func literal(_ word: StaticString, into out: inout [UInt8]) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= p.count else { return false }
        for k in 0..<n where p[i + k] != word.utf8Start[k] { return false }
        i += n
        out.append(contentsOf: UnsafeBufferPointer(start: word.utf8Start, count: n))
        return true
    }

    private mutating func object(into out: inout [UInt8]) -> Bool {
        depth += 1
        defer { depth -= 1 }
        guard depth <= 512 else { return false }
        i += 1
        var members: [(key: [UInt8], value: [UInt8])] = []
        skipWhitespace()
        if i < p.count, p[i] == UInt8(ascii: "}") {
            i += 1
            out.append(contentsOf: [UInt8(ascii: "{"), UInt8(ascii: "}")])
            return true
        }
        while true {
            skipWhitespace()
            guard i < p.count, p[i] == UInt8(ascii: "\""), let key = string() else { return false }
            skipWhitespace()
            guard i < p.count, p[i] == UInt8(ascii: ":") else { return false }
            i += 1
            var v: [UInt8] = []
            guard value(into: &v) else { return false }
            members.append((key, v))
            skipWhitespace()
            guard i < p.count else { return false }
            if p[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            guard p[i] == UInt8(ascii: "}") else { return false }
            i += 1
            break
        }
        // jsonb key order: shorter first, then bytewise; of duplicates the last one wins.
        let order = members.indices.sorted { a, b in
            let ka = members[a].key
            let kb = members[b].key
            if ka.count != kb.count { return ka.count < kb.count }
            if ka != kb { return ka.lexicographicallyPrecedes(kb) }
            return a < b
        }
        out.append(UInt8(ascii: "{"))
        var first = true
        for (n, idx) in order.enumerated() {
            if n + 1 < order.count, members[order[n + 1]].key == members[idx].key { continue }
            if !first { out.append(contentsOf: [UInt8(ascii: ","), UInt8(ascii: " ")]) }
            first = false
            Self.appendQuoted(members[idx].key, into: &out)
            out.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: " ")])
            out.append(contentsOf: members[idx].value)
        }
        out.append(UInt8(ascii: "}"))
        return true
    }

    private mutating func array(into out: inout [UInt8]) -> Bool {
        depth += 1
        defer { depth -= 1 }
        guard depth <= 512 else { return false }
        i += 1
        out.append(UInt8(ascii: "["))
        skipWhitespace()
        if i < p.count, p[i] == UInt8(ascii: "]") {
            i += 1
            out.append(UInt8(ascii: "]"))
            return true
        }
        var first = true
        while true {
            if !first { out.append(contentsOf: [UInt8(ascii: ","), UInt8(ascii: " ")]) }
            first = false
            guard value(into: &out) else { return false }
            skipWhitespace()
            guard i < p.count else { return false }
            if p[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            guard p[i] == UInt8(ascii: "]") else { return false }
            i += 1
            out.append(UInt8(ascii: "]"))
            return true
        }
    }

    /// Parses a JSON string at `i` (on the opening quote) into its unescaped UTF-8 bytes.
    private mutating func string() -> [UInt8]? {
        i += 1
        var s: [UInt8] = []
        while i < p.count {
            let c = p[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return s
            }
            if c < 0x20 { return nil }
            if c != UInt8(ascii: "\\") {
                s.append(c)
                i += 1
                continue
            }
            i += 1
            guard i < p.count else { return nil }
            let e = p[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): s.append(e)
            case UInt8(ascii: "b"): s.append(0x08)
            case UInt8(ascii: "f"): s.append(0x0C)
            case UInt8(ascii: "n"): s.append(0x0A)
            case UInt8(ascii: "r"): s.append(0x0D)
            case UInt8(ascii: "t"): s.append(0x09)
            case UInt8(ascii: "u"):
                guard var scalar = hex4() else { return nil }
                if (0xD800...0xDBFF).contains(scalar) {
                    guard i + 1 < p.count, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u") else { return nil }
                    i += 2
                    guard let low = hex4(), (0xDC00...0xDFFF).contains(low) else { return nil }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) || scalar == 0 {
                    return nil  // lone low surrogate; \u0000 cannot be stored in jsonb
                }
                guard let u = Unicode.Scalar(scalar) else { return nil }
                s.append(contentsOf: Array(String(Character(u)).utf8))
            default: return nil
            }
        }
        return nil
    }

    private mutating func hex4() -> UInt32? {
        guard i + 4 <= p.count else { return nil }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = p[i]
            let d: UInt32
            switch c {
            case 48...57: d = UInt32(c - 48)
            case 65...70: d = UInt32(c - 55)
            case 97...102: d = UInt32(c - 87)
            default: return nil
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private mutating func number(into out: inout [UInt8]) -> Bool {
        let start = i
        if i < p.count, p[i] == UInt8(ascii: "-") { i += 1 }
        guard i < p.count, p[i] >= 48, p[i] <= 57 else { return false }
        if p[i] == 48 {
            i += 1
        } else {
            while i < p.count, p[i] >= 48, p[i] <= 57 { i += 1 }
        }
        if i < p.count, p[i] == UInt8(ascii: ".") {
            i += 1
            guard i < p.count, p[i] >= 48, p[i] <= 57 else { return false }
            while i < p.count, p[i] >= 48, p[i] <= 57 { i += 1 }
        }
        if i < p.count, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            i += 1
            if i < p.count, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
            guard i < p.count, p[i] >= 48, p[i] <= 57 else { return false }
            while i < p.count, p[i] >= 48, p[i] <= 57 { i += 1 }
        }
        guard let normal = DecimalText.normalize(UnsafeBufferPointer(rebasing: p[start..<i])) else { return false }
        out.append(contentsOf: normal)
        return true
    }

    /// Appends a JSON string the way PostgreSQL's `escape_json` writes it.
    static func appendQuoted(_ s: [UInt8], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for c in s {
            switch c {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x08: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), 48, 48, hex[Int(c >> 4)], hex[Int(c & 15)]])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// Decimal text normalised the way PostgreSQL's `numeric` type prints it.
enum DecimalText {
    /// Normalises `[+-]digits[.digits][e[+-]digits]` (also `.5` and `5.`) to numeric's output: no exponent,
    /// no leading zeros, the scale the input implies, no sign on zero. `nil` when it is not a decimal number or
    /// its exponent is beyond ±1000.
    static func normalize(_ p: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var i = 0
        let n = p.count
        var negative = false
        if i < n, p[i] == UInt8(ascii: "-") || p[i] == UInt8(ascii: "+") {
            negative = p[i] == UInt8(ascii: "-")
            i += 1
        }
        var digits: [UInt8] = []
        var intCount = 0
        var fracCount = 0
        while i < n, p[i] >= 48, p[i] <= 57 {
            digits.append(p[i])
            intCount += 1
            i += 1
        }
        if i < n, p[i] == UInt8(ascii: ".") {
            i += 1
            while i < n, p[i] >= 48, p[i] <= 57 {
                digits.append(p[i])
                fracCount += 1
                i += 1
            }
        }
        guard !digits.isEmpty else { return nil }
        var exp = 0
        if i < n, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            i += 1
            var eneg = false
            if i < n, p[i] == UInt8(ascii: "-") || p[i] == UInt8(ascii: "+") {
                eneg = p[i] == UInt8(ascii: "-")
                i += 1
            }
            var any = false
            while i < n, p[i] >= 48, p[i] <= 57 {
                exp = exp * 10 + Int(p[i] - 48)
                any = true
                i += 1
                if exp > 1000 { return nil }
            }
            guard any else { return nil }
            if eneg { exp = -exp }
        }
        guard i == n else { return nil }
        let scale = max(0, fracCount - exp)
        let point = intCount + exp  // digits before the decimal point
        var intPart: [UInt8]
        var fracPart: [UInt8]
        if point <= 0 {
            intPart = []
            fracPart = [UInt8](repeating: 48, count: -point) + digits
        } else if point >= digits.count {
            intPart = digits + [UInt8](repeating: 48, count: point - digits.count)
            fracPart = []
        } else {
            intPart = Array(digits[..<point])
            fracPart = Array(digits[point...])
        }
        if fracPart.count > scale { fracPart.removeLast(fracPart.count - scale) }
        while fracPart.count < scale { fracPart.append(48) }
        while let f = intPart.first, f == 48 { intPart.removeFirst() }
        if intPart.isEmpty { intPart = [48] }
        let isZero = intPart == [48] && fracPart.allSatisfy { $0 == 48 }
        var out: [UInt8] = []
        if negative && !isZero { out.append(UInt8(ascii: "-")) }
        out.append(contentsOf: intPart)
        if !fracPart.isEmpty {
            out.append(UInt8(ascii: "."))
            out.append(contentsOf: fracPart)
        }
        return out
    }
}
