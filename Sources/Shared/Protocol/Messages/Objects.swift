import NIOCore

/// What an ``ObjectRequest`` asks for. Every kind is named by a sha256 (lowercase hex).
public enum TransferKind: String, Codable, Sendable, Equatable {
    /// A content-addressed module object, named by the sha256 of its content.
    case object
    /// A module's EROFS metadata image, named by its image digest.
    case image
    /// The signed descriptor JSON of a published module, named by its image digest.
    case descriptor
    /// Protocol v3: a ``BinaryDelta`` that turns the image named by ``ObjectRequest/base`` into the image named by
    /// the digest (the delta's bytes are served in ranges like a file; `totalSize` is the delta's length).
    case imageDelta
    /// Protocol v3: a ``BinaryDelta`` that turns the descriptor of image ``ObjectRequest/base`` into the
    /// descriptor of the image named by the digest.
    case descriptorDelta

    /// Whether the kind is a delta against a base (protocol v3, needs ``ObjectRequest/base``).
    public var isDelta: Bool { self == .imageDelta || self == .descriptorDelta }
}

/// Agent → coordinator (protocol v2): send `length` bytes of an object, image or descriptor from `offset`.
///
/// The agent keeps a bounded number of requests outstanding (its window), so a transfer can never flood it;
/// each request is answered by one ``ObjectChunk`` with the same envelope id, or by an error frame with that
/// id (`NOT_FOUND` when the coordinator does not hold it, `INVALID_INPUT` for a bad digest or range).
public struct ObjectRequest: Codable, Sendable, Equatable {
    public var kind: TransferKind
    public var digest: String
    public var offset: UInt64
    /// At most ``ObjectRequest/maximumLength``; the coordinator also stays below its own frame limit.
    public var length: Int
    /// For the delta kinds (protocol v3): the image digest of the version the agent holds, which the delta is
    /// made against. Absent for every other kind.
    public var base: String?

    /// The largest chunk a request may ask for (well below the 16 MiB default frame limit).
    public static let maximumLength = 4 << 20

    public init(kind: TransferKind, digest: String, offset: UInt64, length: Int, base: String? = nil) {
        self.kind = kind
        self.digest = digest
        self.offset = offset
        self.length = length
        self.base = base
    }
}

/// Coordinator → agent (protocol v2), answer to ``ObjectRequest``: the bytes from `offset`, which travel as
/// the frame's binary payload (``Envelope/payload``), not in the JSON.
public struct ObjectChunk: Sendable, Equatable {
    /// The JSON part of the frame.
    public struct Header: Codable, Sendable, Equatable {
        public var kind: TransferKind
        public var digest: String
        public var offset: UInt64
        /// Size of the whole object, so the agent can tell a short chunk at the end from a truncated one.
        public var totalSize: UInt64

        public init(kind: TransferKind, digest: String, offset: UInt64, totalSize: UInt64) {
            self.kind = kind
            self.digest = digest
            self.offset = offset
            self.totalSize = totalSize
        }
    }

    public var header: Header
    public var data: ByteBuffer

    public init(header: Header, data: ByteBuffer) {
        self.header = header
        self.data = data
    }
}
