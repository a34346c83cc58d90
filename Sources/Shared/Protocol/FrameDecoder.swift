import NIOCore

/// Splits the byte stream into frames: a 4-byte big-endian length, then that many bytes of JSON.
///
/// The length is checked against the configured maximum *before* any of the frame is buffered, so a peer
/// announcing a huge frame costs four bytes of memory, not sixteen megabytes (unlike NIOExtras'
/// `LengthFieldBasedFrameDecoder`, which has no cap). Errors are `MusterError` `.frameTooLarge` and
/// `.protocolError` (truncated frame at end of stream); the connection handler answers them with an error
/// frame and closes.
public struct FrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = ByteBuffer

    /// Default maximum frame size, 16 MiB.
    public static let defaultMaximumFrameBytes = 16 << 20

    public let maximumFrameBytes: Int

    public init(maximumFrameBytes: Int = Self.defaultMaximumFrameBytes) {
        self.maximumFrameBytes = maximumFrameBytes
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try nextFrame(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        if let frame = try nextFrame(&buffer) {
            context.fireChannelRead(Self.wrapInboundOut(frame))
            return .continue
        }
        if seenEOF, buffer.readableBytes > 0 {
            let have = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: have)
            throw MusterError(.protocolError, "truncated frame: the connection ended \(have) bytes into a frame")
        }
        return .needMoreData
    }

    /// Takes one complete frame off the front of `buffer`, if there is one.
    ///
    /// - Throws: `MusterError` `.frameTooLarge` as soon as the length prefix exceeds the maximum.
    func nextFrame(_ buffer: inout ByteBuffer) throws -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return nil
        }
        guard Int(length) <= maximumFrameBytes else {
            throw MusterError(
                .frameTooLarge,
                "frame of \(length) bytes exceeds the maximum of \(maximumFrameBytes) bytes")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        return buffer.readSlice(length: Int(length))
    }
}
