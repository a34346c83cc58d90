import NIOCore
import NIOEmbedded
import NIOTestUtils
import Shared
import Testing

@Suite("FrameDecoder / FrameEncoder")
struct FrameDecoderTests {
    private func frame(_ payload: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(payload.utf8.count), endianness: .big)
        buffer.writeString(payload)
        return buffer
    }

    private func payload(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test func decodesFramesWhateverTheChunking() throws {
        let inputs = ["{\"a\":1}", "", "x", String(repeating: "y", count: 3000)]
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: inputs.map { (frame($0), [payload($0)]) },
            decoderFactory: { FrameDecoder(maximumFrameBytes: 4096) })
    }

    @Test func decodesLargeFramesAssembledInTheirOwnBufferWhateverTheChunking() throws {
        // With a threshold of 16 bytes, all but the smallest frames are collected in a buffer of their own size.
        let inputs = [
            "{\"a\":1}", String(repeating: "p", count: 16), "", "x", String(repeating: "y", count: 3000), "{}",
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: inputs.map { (frame($0), [payload($0)]) },
            decoderFactory: { FrameDecoder(maximumFrameBytes: 4096, directAssemblyBytes: 16) })
    }

    @Test func truncatedLargeFrameAtEndOfStreamIsAnError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var partial = ByteBuffer()
        partial.writeInteger(UInt32(1 << 20), endianness: .big)
        partial.writeRepeatingByte(7, count: 100_000)
        try channel.writeInbound(partial)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect {
            try channel.finish()
        } throws: { error in
            (error as? MusterError)?.code == .protocolError
                && (error as? MusterError)?.message.contains("100004 bytes into a frame") == true
        }
    }

    @Test func rejectsOversizeFrameBeforeBuffering() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumFrameBytes: 1024)))
        var header = ByteBuffer()
        // Only the 4-byte length arrives: the decoder must refuse at once, not wait for 16 MiB.
        header.writeInteger(UInt32(1025), endianness: .big)
        #expect {
            try channel.writeInbound(header)
        } throws: { error in
            (error as? MusterError)?.code == .frameTooLarge
                && (error as? MusterError)?.message.contains("1025") == true
        }
        _ = try? channel.finish()
    }

    @Test func acceptsFrameOfExactlyTheMaximum() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumFrameBytes: 8)))
        try channel.writeInbound(frame("12345678"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == payload("12345678"))
        #expect(try channel.finish().isClean)
    }

    @Test func truncatedFrameAtEndOfStreamIsAnError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var partial = ByteBuffer()
        partial.writeInteger(UInt32(100), endianness: .big)
        partial.writeString("only ten b")
        try channel.writeInbound(partial)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect {
            try channel.finish()
        } throws: { error in
            (error as? MusterError)?.code == .protocolError
                && (error as? MusterError)?.message.contains("truncated") == true
        }
    }

    @Test func encoderWritesLengthPrefix() throws {
        let channel = EmbeddedChannel(handler: MessageToByteHandler(FrameEncoder()))
        let envelope = try Message.heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(10))).envelope(id: "42")
        try channel.writeOutbound(envelope)
        var out = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let prefix = out.readInteger(endianness: .big, as: UInt32.self)
        let length = try #require(prefix)
        #expect(Int(length) == envelope.json.count)
        #expect(out.readableBytes == envelope.json.count)
        // And the decoder reads back the same envelope.
        let decoded = try Envelope(frame: out)
        #expect(decoded == envelope)
        #expect(try channel.finish().isClean)
    }

    @Test func frameWriterSendsAPayloadWithoutCopyingItAndMatchesTheEncoder() throws {
        let chunk = ObjectChunk(
            header: .init(kind: .object, digest: String(repeating: "d", count: 64), offset: 0, totalSize: 5000),
            data: ByteBuffer(repeating: 9, count: 5000))
        let envelope = try Message.objectChunk(chunk).envelope(id: "w1")
        let heartbeat = try Message.heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(10))).envelope(id: "w2")
        let channel = EmbeddedChannel(handler: FrameWriter())
        try channel.writeOutbound(envelope)
        try channel.writeOutbound(heartbeat)
        // The chunk as a header buffer plus the payload buffer itself, the heartbeat as one buffer.
        var header = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let payload = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let json = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        #expect(payload == chunk.data)
        // The very same bytes, not a copy.
        let sent = chunk.data.withUnsafeReadableBytes { $0.baseAddress }
        #expect(payload.withUnsafeReadableBytes { $0.baseAddress } == sent)
        var expected = ByteBuffer()
        try FrameEncoder().encode(data: envelope, out: &expected)
        try FrameEncoder().encode(data: heartbeat, out: &expected)
        var wire = ByteBuffer()
        wire.writeBuffer(&header)
        wire.writeImmutableBuffer(payload)
        wire.writeImmutableBuffer(json)
        #expect(wire == expected)
        #expect(try channel.finish().isClean)
    }
}
