/// A strict JSON reader (RFC 8259) that keeps the positions of every value, so a file can be edited in place: only
/// the bytes of the values that change are replaced, everything else — key order, spacing, number spelling,
/// escapes elsewhere — stays byte-identical. Used to rewrite paths in JSON files and to edit JSON configs.
public struct JSONScan: Sendable {
    /// One step into a document: an object member or an array element.
    public enum Step: Hashable, Sendable, CustomStringConvertible {
        case key(String)
        case index(Int)

        public var description: String {
            switch self {
            case .key(let key): key
            case .index(let index): "\(index)"
            }
        }
    }

    /// A string value (not an object key) of the document.
    public struct StringValue: Sendable, Equatable {
        public var path: [Step]
        /// The byte range of the value including its quotes.
        public var range: Range<Int>
        public var value: String
    }

    /// An object of the document: where it closes and whether it has members, to append one.
    public struct ObjectInfo: Sendable, Equatable {
        public var closingBrace: Int
        public var isEmpty: Bool
        /// Indentation of the object's last member line ("" when the object is on one line or empty).
        public var memberIndent: String
    }

    public private(set) var strings: [StringValue] = []
    /// Byte range of every value, by path (the root is `[]`).
    public private(set) var values: [[Step]: Range<Int>] = [:]
    public private(set) var objects: [[Step]: ObjectInfo] = [:]

    private let bytes: [UInt8]
    private var position = 0

    /// Parses `bytes`.
    ///
    /// - Throws: ``MusterError`` `.invalidInput` naming the line, column and what was expected.
    public init(_ bytes: [UInt8]) throws {
        self.bytes = bytes
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { position = 3 }
        skipSpace()
        try value(at: [], depth: 0)
        skipSpace()
        if position != bytes.count { throw failure("unexpected content after the JSON value") }
    }

    // MARK: - Grammar

    private mutating func value(at path: [Step], depth: Int) throws {
        guard depth < 512 else { throw failure("nesting deeper than 512 levels") }
        guard position < bytes.count else { throw failure("unexpected end of input, expected a value") }
        let start = position
        switch bytes[position] {
        case UInt8(ascii: "{"): try object(at: path, depth: depth)
        case UInt8(ascii: "["): try array(at: path, depth: depth)
        case UInt8(ascii: "\""):
            let decoded = try string()
            strings.append(StringValue(path: path, range: start..<position, value: decoded))
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
        default: throw failure("expected a value")
        }
        values[path] = start..<position
    }

    private mutating func object(at path: [Step], depth: Int) throws {
        position += 1
        skipSpace()
        var isEmpty = true
        var indent = ""
        var keys = Set<String>()
        if peek(UInt8(ascii: "}")) {
            objects[path] = ObjectInfo(closingBrace: position, isEmpty: true, memberIndent: "")
            position += 1
            return
        }
        while true {
            guard peek(UInt8(ascii: "\"")) else { throw failure("expected a member name in double quotes") }
            indent = indentation(before: position)
            let key = try string()
            guard keys.insert(key).inserted else { throw failure("duplicate member name \"\(key)\"") }
            skipSpace()
            guard peek(UInt8(ascii: ":")) else { throw failure("expected ':' after the member name") }
            position += 1
            skipSpace()
            try value(at: path + [.key(key)], depth: depth + 1)
            isEmpty = false
            skipSpace()
            if peek(UInt8(ascii: ",")) {
                position += 1
                skipSpace()
                continue
            }
            guard peek(UInt8(ascii: "}")) else { throw failure("expected ',' or '}' in an object") }
            objects[path] = ObjectInfo(closingBrace: position, isEmpty: isEmpty, memberIndent: indent)
            position += 1
            return
        }
    }

    private mutating func array(at path: [Step], depth: Int) throws {
        position += 1
        skipSpace()
        if peek(UInt8(ascii: "]")) {
            position += 1
            return
        }
        var index = 0
        while true {
            try value(at: path + [.index(index)], depth: depth + 1)
            index += 1
            skipSpace()
            if peek(UInt8(ascii: ",")) {
                position += 1
                skipSpace()
                continue
            }
            guard peek(UInt8(ascii: "]")) else { throw failure("expected ',' or ']' in an array") }
            position += 1
            return
        }
    }

    private mutating func string() throws -> String {
        position += 1
        var scalars = String.UnicodeScalarView()
        var runStart = position
        func flushRun(_ end: Int) throws {
            guard runStart < end else { return }
            guard let text = String(validating: bytes[runStart..<end], as: UTF8.self) else {
                throw failure("a string holds bytes that are not UTF-8")
            }
            scalars.append(contentsOf: text.unicodeScalars)
        }
        while position < bytes.count {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                try flushRun(position)
                position += 1
                return String(scalars)
            case UInt8(ascii: "\\"):
                try flushRun(position)
                position += 1
                guard position < bytes.count else { break }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"),
                            bytes[position + 1] == UInt8(ascii: "u")
                        else { throw failure("unpaired UTF-16 surrogate in a \\u escape") }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else {
                            throw failure("unpaired UTF-16 surrogate in a \\u escape")
                        }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else {
                        throw failure("unpaired UTF-16 surrogate in a \\u escape")
                    }
                    scalars.append(scalar)
                default:
                    throw failure("invalid escape '\\\(Character(Unicode.Scalar(escape)))' in a string")
                }
                runStart = position
            case 0..<0x20:
                throw failure("a control character (0x\(String(byte, radix: 16))) inside a string must be escaped")
            default:
                position += 1
            }
        }
        throw failure("unterminated string")
    }

    private mutating func hex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw failure("truncated \\u escape") }
        var code: UInt32 = 0
        for byte in bytes[position..<position + 4] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("invalid hex digit in a \\u escape")
            }
            code = code << 4 | UInt32(digit)
        }
        position += 4
        return code
    }

    private mutating func literal(_ word: StaticString) throws {
        let expected = Array(UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount))
        guard bytes.count - position >= expected.count, Array(bytes[position..<position + expected.count]) == expected
        else { throw failure("expected a value") }
        position += expected.count
    }

    private mutating func number() throws {
        if peek(UInt8(ascii: "-")) { position += 1 }
        guard position < bytes.count, isDigit(bytes[position]) else { throw failure("invalid number") }
        if bytes[position] == UInt8(ascii: "0") {
            position += 1
        } else {
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        if peek(UInt8(ascii: ".")) {
            position += 1
            guard position < bytes.count, isDigit(bytes[position]) else { throw failure("invalid number") }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        if peek(UInt8(ascii: "e")) || peek(UInt8(ascii: "E")) {
            position += 1
            if peek(UInt8(ascii: "+")) || peek(UInt8(ascii: "-")) { position += 1 }
            guard position < bytes.count, isDigit(bytes[position]) else { throw failure("invalid number") }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
    }

    // MARK: - Helpers

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private func peek(_ byte: UInt8) -> Bool { position < bytes.count && bytes[position] == byte }

    private mutating func skipSpace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    /// The spaces/tabs between the start of the line holding `offset` and `offset`, if only whitespace precedes it.
    private func indentation(before offset: Int) -> String {
        var start = offset
        while start > 0, bytes[start - 1] == 0x20 || bytes[start - 1] == 0x09 { start -= 1 }
        guard start > 0, bytes[start - 1] == 0x0A else { return "" }
        return String(decoding: bytes[start..<offset], as: UTF8.self)
    }

    private func failure(_ what: String) -> MusterError {
        var line = 1
        var column = 1
        for byte in bytes[..<min(position, bytes.count)] {
            if byte == 0x0A {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {
                column += 1
            }
        }
        return MusterError(.invalidInput, "not valid JSON at line \(line), column \(column): \(what)")
    }
}

extension JSONScan {
    /// `value` as a JSON string literal (quotes included), escaping what JSON requires and nothing else.
    public static func encode(string value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\u{00}"..."\u{1F}":
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// Replaces byte ranges (which must not overlap) with new text; returns the new document.
    public static func splice(_ bytes: [UInt8], _ edits: [(range: Range<Int>, text: String)]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + edits.reduce(0) { $0 + $1.text.utf8.count })
        var cursor = 0
        for edit in edits.sorted(by: { $0.range.lowerBound < $1.range.lowerBound }) {
            out.append(contentsOf: bytes[cursor..<edit.range.lowerBound])
            out.append(contentsOf: edit.text.utf8)
            cursor = edit.range.upperBound
        }
        out.append(contentsOf: bytes[cursor...])
        return out
    }
}
