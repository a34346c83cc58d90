import NIOCore

/// Splits the byte stream into frames: a 4-byte big-endian length, then that many bytes of JSON.
///
/// The length is checked against the configured maximum *before* any of the frame is buffered, so a peer
/// announcing a huge frame costs four bytes of memory, not sixteen megabytes (unlike NIOExtras'
/// `LengthFieldBasedFrameDecoder`, which has no cap). Errors are `MusterError` `.frameTooLarge` and
/// `.protocolError` (truncated frame at end of stream); the connection handler answers them with an error
/// frame and closes.
///
/// A frame of at least ``directAssemblyBytes`` (64 KiB unless told) that has not fully arrived is assembled in a
/// buffer of exactly its size, each arriving byte copied once. Left to `ByteToMessageHandler`'s cumulation buffer,
/// a 1 MiB module chunk was copied several times: the buffer grew read by read, and after every frame handed on (a
/// slice sharing its storage) the start of the next one was copied out again.
public struct FrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = ByteBuffer

    /// Default maximum frame size, 16 MiB.
    public static let defaultMaximumFrameBytes = 16 << 20

    /// Frames this large or larger are assembled in their own buffer (by default).
    public static let defaultDirectAssemblyBytes = 64 << 10

    public let maximumFrameBytes: Int
    /// Frames this large or larger are assembled in their own buffer.
    public let directAssemblyBytes: Int

    /// The large frame being assembled (its bytes so far) and how many bytes it still lacks.
    private var assembling: ByteBuffer?
    private var missing = 0

    public init(
        maximumFrameBytes: Int = Self.defaultMaximumFrameBytes,
        directAssemblyBytes: Int = Self.defaultDirectAssemblyBytes
    ) {
        self.maximumFrameBytes = maximumFrameBytes
        self.directAssemblyBytes = max(1, directAssemblyBytes)
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
        if seenEOF, buffer.readableBytes > 0 || assembling != nil {
            let have = buffer.readableBytes + (assembling.map { 4 + $0.readableBytes } ?? 0)
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            assembling = nil
            throw MusterError(.protocolError, "truncated frame: the connection ended \(have) bytes into a frame")
        }
        return .needMoreData
    }

    /// Takes one complete frame off the front of `buffer`, if there is one. The start of a large frame is taken
    /// off too (into the decoder's own buffer) so that it is not copied again.
    ///
    /// - Throws: `MusterError` `.frameTooLarge` as soon as the length prefix exceeds the maximum.
    mutating func nextFrame(_ buffer: inout ByteBuffer) throws -> ByteBuffer? {
        if var frame = assembling {
            // Not stored while written to, so the buffer stays uniquely referenced and is never copied.
            assembling = nil
            let take = min(missing, buffer.readableBytes)
            frame.writeImmutableBuffer(buffer.readSlice(length: take) ?? ByteBuffer())
            missing -= take
            guard missing == 0 else {
                assembling = frame
                return nil
            }
            return frame
        }
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return nil
        }
        guard Int(length) <= maximumFrameBytes else {
            throw MusterError(
                .frameTooLarge,
                "frame of \(length) bytes exceeds the maximum of \(maximumFrameBytes) bytes")
        }
        if buffer.readableBytes >= 4 + Int(length) {
            buffer.moveReaderIndex(forwardBy: 4)
            return buffer.readSlice(length: Int(length))
        }
        guard Int(length) >= directAssemblyBytes else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        var frame = ByteBufferAllocator().buffer(capacity: Int(length))
        missing = Int(length) - buffer.readableBytes
        frame.writeBuffer(&buffer)
        assembling = frame
        return nil
    }
}
