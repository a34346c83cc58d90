import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOSSL
import Shared
import X509

/// Lets a `/v1/…` request through only over a connection whose client presented the admin certificate.
///
/// The TLS layer already verified any presented certificate against the cluster CA (the admin listener uses
/// `certificateVerification = .optionalVerification`, so `/health` works without one). Node certificates chain
/// to the same CA, so the certificate must also be the admin one
/// (``CertificateAuthority/isAdminCertificate(_:)``).
public struct AdminAuthMiddleware: RouterMiddleware {
    public typealias Input = Request
    public typealias Output = Response
    public typealias Context = AdminRequestContext

    /// How to read the peer certificate; the real one reads the connection's `NIOSSLHandler`.
    let peerCertificate: @Sendable (any Channel) async throws -> Certificate?

    init(peerCertificate: @escaping @Sendable (any Channel) async throws -> Certificate? = Self.tlsPeerCertificate) {
        self.peerCertificate = peerCertificate
    }

    public func handle(_ request: Request, context: Context, next: @concurrent (Request, Context) async throws -> Response)
        async throws -> Response
    {
        guard let certificate = try await peerCertificate(context.channel) else {
            throw MusterError(
                .unauthorized, "the admin API needs the admin client certificate",
                hint: "use the muster CLI with --state-dir pointing at the coordinator's state directory, "
                    + "or copy admin.json, ca.crt, admin.crt and admin.key to ~/.config/muster/")
        }
        guard CertificateAuthority.isAdminCertificate(certificate) else {
            throw MusterError(
                .forbidden, "this client certificate (\(certificate.subject)) is not the admin certificate",
                hint: "node certificates cannot use the admin API")
        }
        var context = context
        context.actor = MusterPKI.commonName(of: certificate.subject) ?? CertificateAuthority.adminCommonName
        return try await next(request, context)
    }

    /// The verified peer certificate of a TLS connection, or `nil` when the client presented none.
    @Sendable public static func tlsPeerCertificate(_ channel: any Channel) async throws -> Certificate? {
        guard let peer = try await channel.nioSSL_peerCertificate().get() else { return nil }
        // NIOSSLCertificate → swift-certificates through PEM: Shared's PEM helpers own the ASN.1 decoding.
        let base64 = Data(try peer.toDERBytes()).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return try PEM.certificate(from: "-----BEGIN CERTIFICATE-----\n\(base64)\n-----END CERTIFICATE-----\n")
    }
}
