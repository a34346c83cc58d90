/// The agent-channel protocol version, negotiated in `hello` / `welcome` (DESIGN §3).
///
/// The agent offers every version it speaks; the coordinator picks the highest one both support, or answers
/// with an error frame naming both sides' versions and closes the connection.
public struct ProtocolVersion: RawRepresentable, Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public var rawValue: Int

    public init(rawValue: Int) { self.rawValue = rawValue }
    public init(_ rawValue: Int) { self.rawValue = rawValue }

    /// The first version: join, hello/welcome, heartbeats, certificate renewal.
    public static let v1 = ProtocolVersion(1)

    /// Module transfer: `objectRequest` / `objectChunk`, whose chunk bytes travel as a binary payload after the
    /// envelope's JSON (see ``Envelope/payload``) instead of base64 inside it.
    public static let v2 = ProtocolVersion(2)

    /// Module deltas: `objectRequest` kinds `imageDelta` / `descriptorDelta` with a `base` image digest, so a node
    /// holding an earlier version receives a ``BinaryDelta`` instead of the whole image and descriptor.
    public static let v3 = ProtocolVersion(3)

    /// Every version this build speaks, oldest first.
    public static let supported: [ProtocolVersion] = [.v1, .v2, .v3]

    /// The version of the envelope format itself (the `v` field of every frame).
    public static let envelopeVersion = 1

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "v\(rawValue)" }

    public init(from decoder: any Decoder) throws {
        self.rawValue = try decoder.singleValueContainer().decode(Int.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    /// The highest version in both lists, or `nil` when they share none.
    public static func negotiate(offered: [ProtocolVersion], supported: [ProtocolVersion] = Self.supported)
        -> ProtocolVersion?
    {
        Set(offered).intersection(supported).max()
    }
}
