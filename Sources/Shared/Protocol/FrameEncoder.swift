import NIOCore

/// Writes an ``Envelope`` as a frame: 4-byte big-endian length, then the envelope's JSON (and its binary
/// payload, if it has one).
public struct FrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Envelope

    public init() {}

    public func encode(data: Envelope, out: inout ByteBuffer) throws {
        guard var payload = data.payload else {
            guard data.json.count <= Int(UInt32.max) else {
                throw MusterError(.frameTooLarge, "frame of \(data.json.count) bytes cannot be length-prefixed")
            }
            out.reserveCapacity(4 + data.json.count)
            out.writeInteger(UInt32(data.json.count), endianness: .big)
            out.writeBytes(data.json)
            return
        }
        // Binary frame: marker, JSON length, JSON, payload (see Envelope.payload).
        let length = 1 + 4 + data.json.count + payload.readableBytes
        guard length <= Int(UInt32.max) else {
            throw MusterError(.frameTooLarge, "frame of \(length) bytes cannot be length-prefixed")
        }
        out.reserveCapacity(4 + length)
        out.writeInteger(UInt32(length), endianness: .big)
        out.writeInteger(Envelope.binaryFrameMarker)
        out.writeInteger(UInt32(data.json.count), endianness: .big)
        out.writeBytes(data.json)
        out.writeBuffer(&payload)
    }
}
