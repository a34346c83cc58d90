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
        out.reserveCapacity(4 + 1 + 4 + data.json.count + payload.readableBytes)
        try encodeBinaryHeader(data, payloadBytes: payload.readableBytes, out: &out)
        out.writeBuffer(&payload)
    }

    /// Binary frame up to its payload: length, marker, JSON length, JSON (see ``Envelope/payload``).
    func encodeBinaryHeader(_ data: Envelope, payloadBytes: Int, out: inout ByteBuffer) throws {
        let length = 1 + 4 + data.json.count + payloadBytes
        guard length <= Int(UInt32.max) else {
            throw MusterError(.frameTooLarge, "frame of \(length) bytes cannot be length-prefixed")
        }
        out.writeInteger(UInt32(length), endianness: .big)
        out.writeInteger(Envelope.binaryFrameMarker)
        out.writeInteger(UInt32(data.json.count), endianness: .big)
        out.writeBytes(data.json)
    }
}

/// Writes ``Envelope``s as frames in ``FrameEncoder``'s format without copying a binary payload: a frame with a
/// payload goes down the pipeline as two buffers, its header (length, marker, JSON length, JSON) and the payload
/// as it is. `MessageToByteHandler(FrameEncoder())` copied every 1 MiB module chunk into a fresh buffer before
/// TLS copied it again; this is what the agent listener and the agent's connection use.
public final class FrameWriter: ChannelOutboundHandler {
    public typealias OutboundIn = Envelope
    public typealias OutboundOut = ByteBuffer

    private let encoder = FrameEncoder()

    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let envelope = Self.unwrapOutboundIn(data)
        do {
            var header = context.channel.allocator.buffer(capacity: 4 + 1 + 4 + envelope.json.count)
            guard let payload = envelope.payload else {
                try encoder.encode(data: envelope, out: &header)
                context.write(Self.wrapOutboundOut(header), promise: promise)
                return
            }
            try encoder.encodeBinaryHeader(envelope, payloadBytes: payload.readableBytes, out: &header)
            // Nothing can come between the two writes: both happen here, on the event loop.
            context.write(Self.wrapOutboundOut(header), promise: nil)
            context.write(Self.wrapOutboundOut(payload), promise: promise)
        } catch {
            promise?.fail(error)
            context.fireErrorCaught(error)
        }
    }
}

@available(*, unavailable)
extension FrameWriter: Sendable {}
