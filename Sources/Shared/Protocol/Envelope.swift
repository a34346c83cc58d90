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
    /// Raw bytes after the JSON (protocol v2, `objectChunk` only): the frame is then
    /// `0x00 | UInt32 JSON length | JSON | payload`, so chunk data travels without base64. A JSON-only frame
    /// starts with `{`, never with a zero byte, so the two shapes cannot be confused.
    public var payload: ByteBuffer?

    /// First byte of a frame that carries a binary ``payload``.
    public static let binaryFrameMarker: UInt8 = 0

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

    /// Parses a frame's payload from a `ByteBuffer`: a JSON envelope, or a marker byte, the JSON's length, the
    /// JSON and the binary ``payload`` (kept as a slice of `frame`, not copied).
    public init(frame: ByteBuffer) throws {
        guard frame.getInteger(at: frame.readerIndex, as: UInt8.self) == Self.binaryFrameMarker else {
            try self.init(frame: Data(frame.readableBytesView))
            return
        }
        var rest = frame
        rest.moveReaderIndex(forwardBy: 1)
        guard let length = rest.readInteger(endianness: .big, as: UInt32.self), Int(length) <= rest.readableBytes,
            let json = rest.readSlice(length: Int(length))
        else {
            throw MusterError(
                .protocolError, "malformed binary frame: the JSON length exceeds the frame's \(frame.readableBytes) bytes")
        }
        try self.init(frame: Data(json.readableBytesView))
        self.payload = rest
    }

    /// Encodes an envelope around `body`, with an optional binary ``payload``.
    public init<Body: Encodable>(type: MessageType, id: String, body: Body, payload: ByteBuffer? = nil) throws {
        self.payload = payload
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
