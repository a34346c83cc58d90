import Hummingbird
import Logging
import NIOCore
import NIOSSL
import X509

/// The admin API's request context: Hummingbird's core storage plus the connection's channel, from which
/// ``AdminAuthMiddleware`` reads the TLS peer certificate.
public struct AdminRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The HTTP/1.1 connection (its pipeline holds the `NIOSSLHandler`).
    public let channel: any Channel
    /// The admin certificate's common name once ``AdminAuthMiddleware`` accepted the request.
    public var actor: String?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
        self.actor = nil
    }
}
