import NIOCore

/// Writes an ``Envelope`` as a frame: 4-byte big-endian length, then the envelope's JSON.
public struct FrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Envelope

    public init() {}

    public func encode(data: Envelope, out: inout ByteBuffer) throws {
        guard data.json.count <= Int(UInt32.max) else {
            throw MusterError(.frameTooLarge, "frame of \(data.json.count) bytes cannot be length-prefixed")
        }
        out.reserveCapacity(4 + data.json.count)
        out.writeInteger(UInt32(data.json.count), endianness: .big)
        out.writeBytes(data.json)
    }
}
