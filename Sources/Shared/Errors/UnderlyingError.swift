/// A non-`Sendable` error reduced to its description, so it can travel as a ``MusterError/cause``.
public struct UnderlyingError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ error: any Error) {
        self.description = String(reflecting: error)
    }

    public init(describing text: String) {
        self.description = text
    }
}
