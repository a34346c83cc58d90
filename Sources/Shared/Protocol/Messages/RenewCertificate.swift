import Foundation

/// Agent → coordinator over an established session: a CSR for the node's key, sent at 2/3 of the current
/// certificate's lifetime.
public struct RenewCertificate: Codable, Sendable, Equatable {
    public var csrPEM: String

    public init(csrPEM: String) {
        self.csrPEM = csrPEM
    }
}

/// Coordinator → agent, answer to ``RenewCertificate``.
public struct CertificateRenewed: Codable, Sendable, Equatable {
    public var certificatePEM: String
    public var notAfter: Date

    public init(certificatePEM: String, notAfter: Date) {
        self.certificatePEM = certificatePEM
        self.notAfter = notAfter
    }
}
