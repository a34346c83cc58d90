/// Validates JSON text and renders it exactly as PostgreSQL prints the equivalent `jsonb` value.
///
/// jsonb drops insignificant whitespace, keeps the last of duplicate keys, orders keys by length then bytes,
/// prints `{"a": 1, "b": [1, 2]}`, stores numbers as `numeric` (so `1e2` prints `100`), and rejects `\u0000`.
/// Rendering the same way on the SQLite side lets the checksum compare `jsonb::text` with the source.
///
/// A value is reused for many documents (the copier canonicalises one per row): its scratch buffers keep their
/// capacity, so a document costs no allocation once they have grown. Strings without escapes and plain integers
/// (the common case) are copied through as they are.
struct JSONCanonical {
    private var p = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
    private var i = 0
    private var depth = 0
    /// The unescaped keys of the objects being parsed (a stack, like `members`).
    private var keys: [UInt8] = []
    /// The members of the objects being parsed: each object's members sit above its parent's.
    private var members: [Member] = []
    /// Where an object's rendered member values are moved while the object is rewritten in key order.
    private var reorder: [UInt8] = []

    private struct Member {
        var keyStart: Int
        var keyEnd: Int
        var valueStart: Int
        var valueEnd: Int
    }

    init() {}

    /// Returns the canonical rendering, or `nil` when the text is not valid JSON (or not storable in jsonb).
    static func canonicalize(_ p: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var parser = JSONCanonical()
        var out: [UInt8] = []
        return parser.canonicalize(p, into: &out) ? out : nil
    }

    /// Replaces `out` with the canonical rendering of `p`; `false` when the text is not valid JSON (or not
    /// storable in jsonb), `out` then holds garbage.
    mutating func canonicalize(_ text: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) -> Bool {
        p = text
        i = 0
        depth = 0
        keys.removeAll(keepingCapacity: true)
        members.removeAll(keepingCapacity: true)
        out.removeAll(keepingCapacity: true)
        out.reserveCapacity(text.count + 16)
        guard value(into: &out) else { return false }
        skipWhitespace()
        return i == p.count
    }

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
            if let end = plainStringEnd() {
                // No escapes: jsonb prints it back byte for byte.
                out.append(contentsOf: UnsafeBufferPointer(rebasing: p[i..<end]))
                i = end
                return true
            }
            let start = keys.count
            defer { keys.removeLast(keys.count - start) }
            guard unescapeString() else { return false }
            Self.appendQuoted(keys[start...], into: &out)
            return true
        case UInt8(ascii: "t"): return literal("true", into: &out)
        case UInt8(ascii: "f"): return literal("false", into: &out)
        case UInt8(ascii: "n"): return literal("null", into: &out)
        default: return number(into: &out)
        }
    }

    /// With `i` on an opening quote: the index just past the closing quote when the string holds no escape and no
    /// control character, else `nil`.
    private func plainStringEnd() -> Int? {
        var k = i + 1
        let n = p.count
        while k < n {
            let c = p[k]
            if c == UInt8(ascii: "\"") { return k + 1 }
            if c == UInt8(ascii: "\\") || c < 0x20 { return nil }
            k += 1
        }
        return nil
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
        skipWhitespace()
        if i < p.count, p[i] == UInt8(ascii: "}") {
            i += 1
            out.append(UInt8(ascii: "{"))
            out.append(UInt8(ascii: "}"))
            return true
        }
        let base = members.count
        let keyBase = keys.count
        let valueBase = out.count
        defer {
            members.removeLast(members.count - base)
            keys.removeLast(keys.count - keyBase)
        }
        while true {
            skipWhitespace()
            guard i < p.count, p[i] == UInt8(ascii: "\"") else { return false }
            let keyStart = keys.count
            guard unescapeString() else { return false }
            let keyEnd = keys.count
            skipWhitespace()
            guard i < p.count, p[i] == UInt8(ascii: ":") else { return false }
            i += 1
            let valueStart = out.count
            guard value(into: &out) else { return false }
            members.append(Member(keyStart: keyStart, keyEnd: keyEnd, valueStart: valueStart, valueEnd: out.count))
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
        // jsonb key order: shorter first, then bytewise; of duplicates the last one wins. A stable insertion sort
        // (objects are small) keeps duplicates in input order, next to each other.
        let end = members.count
        if end - base > 1 {
            for m in (base + 1)..<end {
                let x = members[m]
                var k = m
                while k > base, keyPrecedes(x, members[k - 1]) {
                    members[k] = members[k - 1]
                    k -= 1
                }
                members[k] = x
            }
        }
        // The values were rendered in input order after `valueBase`; move them aside and write the object.
        reorder.removeAll(keepingCapacity: true)
        reorder.append(contentsOf: out[valueBase...])
        out.removeLast(out.count - valueBase)
        out.append(UInt8(ascii: "{"))
        var first = true
        for m in base..<end {
            let member = members[m]
            if m + 1 < end, keyEqual(members[m + 1], member) { continue }
            if !first {
                out.append(UInt8(ascii: ","))
                out.append(UInt8(ascii: " "))
            }
            first = false
            Self.appendQuoted(keys[member.keyStart..<member.keyEnd], into: &out)
            out.append(UInt8(ascii: ":"))
            out.append(UInt8(ascii: " "))
            out.append(contentsOf: reorder[(member.valueStart - valueBase)..<(member.valueEnd - valueBase)])
        }
        out.append(UInt8(ascii: "}"))
        return true
    }

    private func keyEqual(_ a: Member, _ b: Member) -> Bool {
        a.keyEnd - a.keyStart == b.keyEnd - b.keyStart && keys[a.keyStart..<a.keyEnd].elementsEqual(keys[b.keyStart..<b.keyEnd])
    }

    /// Strictly before in jsonb key order (length, then bytes).
    private func keyPrecedes(_ a: Member, _ b: Member) -> Bool {
        let la = a.keyEnd - a.keyStart
        let lb = b.keyEnd - b.keyStart
        if la != lb { return la < lb }
        return keys[a.keyStart..<a.keyEnd].lexicographicallyPrecedes(keys[b.keyStart..<b.keyEnd])
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
            if !first {
                out.append(UInt8(ascii: ","))
                out.append(UInt8(ascii: " "))
            }
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

    /// Parses a JSON string at `i` (on the opening quote), appending its unescaped UTF-8 bytes to `keys`.
    private mutating func unescapeString() -> Bool {
        i += 1
        while i < p.count {
            let c = p[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return true
            }
            if c < 0x20 { return false }
            if c != UInt8(ascii: "\\") {
                keys.append(c)
                i += 1
                continue
            }
            i += 1
            guard i < p.count else { return false }
            let e = p[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): keys.append(e)
            case UInt8(ascii: "b"): keys.append(0x08)
            case UInt8(ascii: "f"): keys.append(0x0C)
            case UInt8(ascii: "n"): keys.append(0x0A)
            case UInt8(ascii: "r"): keys.append(0x0D)
            case UInt8(ascii: "t"): keys.append(0x09)
            case UInt8(ascii: "u"):
                guard var scalar = hex4() else { return false }
                if (0xD800...0xDBFF).contains(scalar) {
                    guard i + 1 < p.count, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u") else { return false }
                    i += 2
                    guard let low = hex4(), (0xDC00...0xDFFF).contains(low) else { return false }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) || scalar == 0 {
                    return false  // lone low surrogate; \u0000 cannot be stored in jsonb
                }
                guard let u = Unicode.Scalar(scalar) else { return false }
                keys.append(contentsOf: String(Character(u)).utf8)
            default: return false
            }
        }
        return false
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
        var plain = true
        if i < p.count, p[i] == UInt8(ascii: ".") {
            plain = false
            i += 1
            guard i < p.count, p[i] >= 48, p[i] <= 57 else { return false }
            while i < p.count, p[i] >= 48, p[i] <= 57 { i += 1 }
        }
        if i < p.count, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            plain = false
            i += 1
            if i < p.count, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
            guard i < p.count, p[i] >= 48, p[i] <= 57 else { return false }
            while i < p.count, p[i] >= 48, p[i] <= 57 { i += 1 }
        }
        if plain {
            // An integer: JSON already forbids leading zeros, so numeric prints it as it is, but for `-0`.
            if i - start == 2, p[start] == UInt8(ascii: "-"), p[start + 1] == 48 {
                out.append(48)
            } else {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: p[start..<i]))
            }
            return true
        }
        guard let normal = DecimalText.normalize(UnsafeBufferPointer(rebasing: p[start..<i])) else { return false }
        out.append(contentsOf: normal)
        return true
    }

    /// Appends a JSON string the way PostgreSQL's `escape_json` writes it.
    static func appendQuoted(_ s: some Collection<UInt8>, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for c in s {
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out.append(UInt8(ascii: "\\"))
                out.append(c)
            case 0x08: Self.appendEscape(UInt8(ascii: "b"), into: &out)
            case 0x0C: Self.appendEscape(UInt8(ascii: "f"), into: &out)
            case 0x0A: Self.appendEscape(UInt8(ascii: "n"), into: &out)
            case 0x0D: Self.appendEscape(UInt8(ascii: "r"), into: &out)
            case 0x09: Self.appendEscape(UInt8(ascii: "t"), into: &out)
            case 0..<0x20:
                let hex: StaticString = "0123456789abcdef"
                out.append(UInt8(ascii: "\\"))
                out.append(UInt8(ascii: "u"))
                out.append(48)
                out.append(48)
                out.append(hex.utf8Start[Int(c >> 4)])
                out.append(hex.utf8Start[Int(c & 15)])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    private static func appendEscape(_ c: UInt8, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\\"))
        out.append(c)
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
