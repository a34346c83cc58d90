import Foundation
import NIOCore
@testable import Shared
import Testing

@Suite("Envelope and messages")
struct EnvelopeTests {
    // Dates travel with millisecond precision; a whole second round-trips exactly.
    static let date = Date(timeIntervalSince1970: 1_760_000_000)
    static let node = UUID()
    static let facts = HostFacts(
        hostname: "n1", machineID: "abc", os: "Debian GNU/Linux 12", kernel: "6.18", cpuCount: 2, memoryBytes: 1 << 30,
        agentVersion: "0.1.0")
    static let report = HealthReport(
        load: [0.1, 0.2, 0.3], memoryTotalBytes: 100, memoryAvailableBytes: 50, diskTotalBytes: 1000, diskFreeBytes: 10,
        uptimeSeconds: 12.5, agentVersion: "0.1.0", clock: date)

    static let messages: [Message] = [
        .joinRequest(
            JoinRequest(tokenID: "abcdefghij", secret: String(repeating: "s", count: 32), csrPEM: "CSR", facts: facts)),
        .joinResponse(
            JoinResponse(nodeID: node, certificatePEM: "C", caCertificatePEM: "CA", heartbeatInterval: .seconds(10))),
        .hello(Hello(nodeID: node, agentVersion: "0.1.0", protocolVersions: [.v1], finishedTaskIDs: [UUID()])),
        .welcome(Welcome(nodeID: node, protocolVersion: .v1, heartbeatInterval: .milliseconds(200), serverTime: date)),
        .heartbeat(Heartbeat(report: report)),
        .heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(12))),
        .renewCertificate(RenewCertificate(csrPEM: "CSR")),
        .certificateRenewed(CertificateRenewed(certificatePEM: "C", notAfter: date)),
        .error(ErrorMessage(code: .tokenExpired, message: "expired", hint: "make a new one")),
        .objectRequest(ObjectRequest(kind: .object, digest: String(repeating: "a", count: 64), offset: 5, length: 7)),
        .objectRequest(
            ObjectRequest(
                kind: .imageDelta, digest: String(repeating: "a", count: 64), offset: 0, length: 7,
                base: String(repeating: "b", count: 64))),
    ]

    @Test(arguments: messages)
    func roundTrip(_ message: Message) throws {
        let envelope = try message.envelope(id: "id-1")
        let decoded = try Envelope(frame: envelope.json)
        #expect(decoded.version == 1)
        #expect(decoded.id == "id-1")
        #expect(decoded.type == message.type)
        #expect(try Message(decoded) == message)
    }

    @Test func wireShapeIsTheDocumentedEnvelope() throws {
        let envelope = try Message.heartbeatAck(HeartbeatAck(heartbeatInterval: .seconds(10))).envelope(id: "7")
        let object = try #require(try JSONSerialization.jsonObject(with: envelope.json) as? [String: Any])
        #expect(Set(object.keys) == ["v", "id", "type", "body"])
        #expect(object["v"] as? Int == 1)
        #expect(object["type"] as? String == "heartbeatAck")
        #expect((object["body"] as? [String: Any])?["heartbeatIntervalMilliseconds"] as? Int == 10_000)
    }

    @Test func unknownTypeDecodesAsEnvelopeButNotAsMessage() throws {
        let envelope = try Envelope(frame: Data(#"{"v":1,"id":"x","type":"teleport","body":{}}"#.utf8))
        #expect(!envelope.type.isKnown)
        #expect { try Message(envelope) } throws: { ($0 as? MusterError)?.code == .protocolError }
    }

    @Test(arguments: ["", "garbage", "[1,2]", #"{"v":1,"type":"hello"}"#, #"{"id":"x","type":"hello","body":{}}"#])
    func malformedEnvelopeIsAProtocolError(_ text: String) {
        #expect { try Envelope(frame: Data(text.utf8)) } throws: { ($0 as? MusterError)?.code == .protocolError }
    }

    @Test func bodyNotMatchingTheTypeIsAProtocolError() throws {
        let envelope = try Envelope(frame: Data(#"{"v":1,"id":"x","type":"hello","body":{"nodeID":3}}"#.utf8))
        #expect { try Message(envelope) } throws: { ($0 as? MusterError)?.code == .protocolError }
    }

    @Test func joinRequestDescriptionHidesTheSecret() {
        let request = JoinRequest(tokenID: "abcdefghij", secret: "topsecretvalue", csrPEM: "", facts: Self.facts)
        #expect(!"\(request)".contains("topsecretvalue"))
    }

    @Test func protocolVersionNegotiation() {
        #expect(ProtocolVersion.negotiate(offered: [.v1, ProtocolVersion(2)], supported: [.v1]) == .v1)
        #expect(
            ProtocolVersion.negotiate(
                offered: [ProtocolVersion(1), ProtocolVersion(3)], supported: [.v1, ProtocolVersion(3)])
                == ProtocolVersion(3))
        #expect(ProtocolVersion.negotiate(offered: [ProtocolVersion(2)], supported: [.v1]) == nil)
    }

    @Test func errorMessageCarriesTheCode() {
        let error = ErrorMessage(MusterError(.nodeForgotten, "gone", hint: "join again")).musterError
        #expect(error.code == .nodeForgotten)
        #expect(error.hint == "join again")
        #expect(ErrorMessage(code: .tokenUsedUp, message: "").code == "TOKEN_USED_UP")
    }

    @Test func objectChunkTravelsAsABinaryFrameThroughEncoderAndDecoder() throws {
        var bytes = ByteBuffer()
        bytes.writeBytes((0..<300).map { UInt8(truncatingIfNeeded: $0) })
        let chunk = ObjectChunk(
            header: .init(kind: .image, digest: String(repeating: "b", count: 64), offset: 1 << 20, totalSize: 3 << 20),
            data: bytes)
        let envelope = try Message.objectChunk(chunk).envelope(id: "c1")
        var wire = ByteBuffer()
        try FrameEncoder().encode(data: envelope, out: &wire)
        // Length prefix, then the marker byte: never the `{` of a JSON-only frame.
        #expect(wire.getInteger(at: 4, as: UInt8.self) == Envelope.binaryFrameMarker)
        var decoder = FrameDecoder()
        let frame = try #require(try decoder.nextFrame(&wire))
        let decoded = try Envelope(frame: frame)
        #expect(decoded.id == "c1")
        #expect(decoded.type == .objectChunk)
        #expect(decoded.payload?.readableBytes == 300)
        #expect(try Message(decoded) == .objectChunk(chunk))
        // The JSON part carries no chunk bytes.
        let object = try #require(try JSONSerialization.jsonObject(with: decoded.json) as? [String: Any])
        #expect((object["body"] as? [String: Any])?["totalSize"] as? Int == 3 << 20)
    }

    @Test func binaryFramesAreStillBoundByTheMaximumFrameSize() throws {
        let chunk = ObjectChunk(
            header: .init(kind: .object, digest: String(repeating: "c", count: 64), offset: 0, totalSize: 4096),
            data: ByteBuffer(repeating: 7, count: 4096))
        var wire = ByteBuffer()
        try FrameEncoder().encode(data: try Message.objectChunk(chunk).envelope(), out: &wire)
        var decoder = FrameDecoder(maximumFrameBytes: 1024)
        #expect { _ = try decoder.nextFrame(&wire) } throws: {
            ($0 as? MusterError)?.code == .frameTooLarge
        }
    }

    @Test func aBinaryFrameWithAnImpossibleJSONLengthIsAProtocolError() {
        var frame = ByteBuffer()
        frame.writeInteger(Envelope.binaryFrameMarker)
        frame.writeInteger(UInt32(1000), endianness: .big)
        frame.writeString("{}")
        #expect { try Envelope(frame: frame) } throws: { ($0 as? MusterError)?.code == .protocolError }
    }

    @Test func anObjectChunkWithoutPayloadIsAProtocolError() throws {
        let envelope = try Envelope(
            frame: Data(
                #"{"v":1,"id":"x","type":"objectChunk","body":{"kind":"object","digest":"d","offset":0,"totalSize":1}}"#
                    .utf8))
        #expect { try Message(envelope) } throws: { ($0 as? MusterError)?.code == .protocolError }
    }
}
