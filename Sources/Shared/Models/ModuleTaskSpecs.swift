/// The `attachModule` task spec: which published module version to fetch and attach on the node.
public struct AttachModuleSpec: Codable, Sendable, Equatable {
    public var name: String
    public var version: String
    /// sha256 of the module's EROFS image; names its descriptor, which the node verifies with the cluster key.
    public var imageDigest: String

    public init(name: String, version: String, imageDigest: String) {
        self.name = name
        self.version = version
        self.imageDigest = imageDigest
    }
}

/// The `detachModule` task spec.
public struct DetachModuleSpec: Codable, Sendable, Equatable {
    public var name: String

    public init(name: String) { self.name = name }
}
