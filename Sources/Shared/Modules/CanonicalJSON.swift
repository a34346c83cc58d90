import Foundation

/// The byte form of JSON that module descriptors are signed in, so signer and verifier agree on the bytes
/// without agreeing on a `JSONEncoder` version.
///
/// Rules: object keys sorted by their UTF-8 bytes; no whitespace; strings escape only `"`, `\` and
/// U+0000–U+001F (as `\b \f \n \r \t` or `\u00XX`), everything else is raw UTF-8; numbers must be integers
/// (a fractional number is an error, so no float formatting question arises); `null` only where the value
/// encodes one (optionals left out by `Codable` stay out).
public enum CanonicalJSON {
    /// Encodes `value` canonically.
    ///
    /// - Throws: `MusterError` `.internal` when the value holds a non-integer number or cannot be encoded.
    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let tree: Value
        do {
            let data = try JSONEncoder().encode(value)
            tree = try JSONDecoder().decode(Value.self, from: data)
        } catch {
            throw MusterError(.internal, "cannot encode \(T.self) as canonical JSON", cause: UnderlyingError(error))
        }
        var out: [UInt8] = []
        tree.write(into: &out)
        return out
    }

    /// A JSON document restricted to what canonical encoding allows.
    indirect enum Value: Decodable {
        case null
        case bool(Bool)
        case integer(Int64)
        case string(String)
        case array([Value])
        case object([String: Value])

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                self = .null
            } else if let bool = try? container.decode(Bool.self) {
                self = .bool(bool)
            } else if let integer = try? container.decode(Int64.self) {
                self = .integer(integer)
            } else if let string = try? container.decode(String.self) {
                self = .string(string)
            } else if let array = try? container.decode([Value].self) {
                self = .array(array)
            } else if let object = try? container.decode([String: Value].self) {
                self = .object(object)
            } else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "canonical JSON allows integers only, no fractional numbers")
            }
        }

        func write(into out: inout [UInt8]) {
            switch self {
            case .null: out += Array("null".utf8)
            case .bool(let value): out += Array((value ? "true" : "false").utf8)
            case .integer(let value): out += Array(String(value).utf8)
            case .string(let value): Self.writeString(value, into: &out)
            case .array(let values):
                out.append(UInt8(ascii: "["))
                for (index, value) in values.enumerated() {
                    if index > 0 { out.append(UInt8(ascii: ",")) }
                    value.write(into: &out)
                }
                out.append(UInt8(ascii: "]"))
            case .object(let members):
                out.append(UInt8(ascii: "{"))
                let keys = members.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
                for (index, key) in keys.enumerated() {
                    if index > 0 { out.append(UInt8(ascii: ",")) }
                    Self.writeString(key, into: &out)
                    out.append(UInt8(ascii: ":"))
                    members[key]?.write(into: &out)
                }
                out.append(UInt8(ascii: "}"))
            }
        }

        private static func writeString(_ string: String, into out: inout [UInt8]) {
            out.append(UInt8(ascii: "\""))
            for byte in string.utf8 {
                switch byte {
                case UInt8(ascii: "\""): out += Array("\\\"".utf8)
                case UInt8(ascii: "\\"): out += Array("\\\\".utf8)
                case 0x08: out += Array("\\b".utf8)
                case 0x0c: out += Array("\\f".utf8)
                case 0x0a: out += Array("\\n".utf8)
                case 0x0d: out += Array("\\r".utf8)
                case 0x09: out += Array("\\t".utf8)
                case 0x00..<0x20:
                    let hex = String(byte, radix: 16)
                    out += Array(("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).utf8)
                default: out.append(byte)
                }
            }
            out.append(UInt8(ascii: "\""))
        }
    }
}
