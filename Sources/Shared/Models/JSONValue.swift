import Foundation

/// Any JSON value: the free-form parts of tasks (spec, progress, result, error details) on the wire and in
/// `jsonb` columns. Each task kind decodes its own typed spec from it (``JSONValue/decode(_:)``).
public enum JSONValue: Codable, Sendable, Equatable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let value = try? c.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? c.decode(Double.self) {
            self = .number(value)
        } else if let value = try? c.decode(String.self) {
            self = .string(value)
        } else if let value = try? c.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let value): try c.encode(value)
        case .number(let value): try c.encode(value)
        case .string(let value): try c.encode(value)
        case .array(let value): try c.encode(value)
        case .object(let value): try c.encode(value)
        }
    }

    /// An empty object, the default spec.
    public static let emptyObject = JSONValue.object([:])

    /// Converts any encodable value (through ``WireCoding``).
    public init<T: Encodable>(encoding value: T) throws {
        let data = try WireCoding.makeEncoder().encode(value)
        self = try WireCoding.makeDecoder().decode(JSONValue.self, from: data)
    }

    /// Decodes a typed value from this JSON (through ``WireCoding``).
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        let data = try WireCoding.makeEncoder().encode(self)
        return try WireCoding.makeDecoder().decode(type, from: data)
    }

    /// The value as compact JSON text (sorted keys).
    public var jsonText: String {
        (try? WireCoding.makeEncoder().encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    /// Parses JSON text.
    /// - Throws: ``MusterError`` `.invalidInput` when the text is not JSON.
    public init(parsing text: String) throws {
        do {
            self = try WireCoding.makeDecoder().decode(JSONValue.self, from: Data(text.utf8))
        } catch {
            throw MusterError(.invalidInput, "not valid JSON: \(text.prefix(200))", cause: UnderlyingError(error))
        }
    }

    /// The member `key` of an object, or `nil`.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members[key]
    }
}
