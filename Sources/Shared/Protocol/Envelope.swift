import Foundation
import NIOCore

/// One frame's JSON envelope: `{"v":1,"id":…,"type":…,"body":{…}}` (DESIGN §3).
///
/// The envelope keeps the frame's complete JSON in ``json`` and decodes the body only when asked
/// (``decodeBody(_:)``), so a frame is parsed once for its header and once for its typed body, and an outgoing
/// frame is encoded exactly once. A reply carries the `id` of the request it answers.
public struct Envelope: Sendable, Equatable, CustomStringConvertible {
    /// Envelope format version (`v`), see ``ProtocolVersion/envelopeVersion``.
    public var version: Int
    /// Correlation id; replies repeat the request's id.
    public var id: String
    public var type: MessageType
    /// The whole envelope as JSON (what goes on the wire after the length prefix).
    public var json: Data

    private struct Header: Decodable {
        var v: Int
        var id: String
        var type: MessageType
    }

    private struct Full<Body: Encodable>: Encodable {
        var v: Int
        var id: String
        var type: MessageType
        var body: Body
    }

    private struct BodyOnly<Body: Decodable>: Decodable {
        var body: Body
    }

    /// Parses a frame's payload (without the length prefix).
    ///
    /// - Throws: `MusterError` `.protocolError` when the payload is not a JSON envelope with `v`, `id`, `type`
    ///   and an object `body`.
    public init(frame: Data) throws {
        let header: Header
        do {
            header = try WireCoding.makeDecoder().decode(Header.self, from: frame)
        } catch {
            throw MusterError(
                .protocolError, "malformed frame: not a JSON envelope with v, id, type and body",
                cause: UnderlyingError(error))
        }
        self.version = header.v
        self.id = header.id
        self.type = header.type
        self.json = frame
    }

    /// Parses a frame's payload from a `ByteBuffer`.
    public init(frame: ByteBuffer) throws {
        try self.init(frame: Data(frame.readableBytesView))
    }

    /// Encodes an envelope around `body`.
    public init<Body: Encodable>(type: MessageType, id: String, body: Body) throws {
        let full = Full(v: ProtocolVersion.envelopeVersion, id: id, type: type, body: body)
        self.version = ProtocolVersion.envelopeVersion
        self.id = id
        self.type = type
        do {
            self.json = try WireCoding.makeEncoder().encode(full)
        } catch {
            throw MusterError(.internal, "could not encode a \(type) frame", cause: UnderlyingError(error))
        }
    }

    /// Decodes the `body` as `Body`.
    ///
    /// - Throws: `MusterError` `.protocolError` naming the message type when the body does not match.
    public func decodeBody<Body: Decodable>(_: Body.Type = Body.self) throws -> Body {
        do {
            return try WireCoding.makeDecoder().decode(BodyOnly<Body>.self, from: json).body
        } catch {
            throw MusterError(
                .protocolError, "malformed \(type) frame: the body does not match the message",
                cause: UnderlyingError(error))
        }
    }

    /// A fresh random correlation id.
    public static func makeID() -> String {
        UUID().uuidString.lowercased()
    }

    public var description: String { "Envelope(v: \(version), id: \(id), type: \(type), \(json.count) bytes)" }
}
