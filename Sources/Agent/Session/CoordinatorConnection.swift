import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Shared
import Synchronization
import X509

/// Opens mutual-TLS connections from the agent to a coordinator's agent listener.
///
/// The server is verified by ``CoordinatorTrust`` inside the TLS handshake, before any frame is written.
/// When that fails, the precise reason (e.g. a CA pin mismatch) replaces NIOSSL's generic handshake error.
public enum CoordinatorConnection {
    public typealias Channel = NIOAsyncChannel<ByteBuffer, Envelope>

    /// Connects and runs `body` with the framed channel; closes the connection afterwards.
    public static func withConnection<Result: Sendable>(
        to address: CoordinatorAddress, certificateChain: [Certificate], privateKey: P256.Signing.PrivateKey,
        trust: CoordinatorTrust, maxFrameBytes: Int = FrameDecoder.defaultMaximumFrameBytes,
        connectTimeout: Duration = .seconds(10),
        _ body: (NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<Envelope>) async throws ->
            Result
    ) async throws -> Result {
        let verificationFailure = FailureBox()
        let tls: NIOSSLContext
        do {
            tls = try NIOSSLContext(
                configuration: try TLSConfiguration.musterAgentClient(
                    certificateChain: certificateChain, privateKey: privateKey))
        } catch let error as MusterError {
            throw error
        } catch {
            throw MusterError(.internal, "cannot set up TLS", cause: UnderlyingError(error))
        }
        func preciseError(_ error: any Error) -> any Error {
            if let failure = verificationFailure.value { return failure }
            if error is MusterError { return error }
            if let ssl = error as? NIOSSLError {
                return MusterError(
                    .connectionFailed, "TLS with the coordinator at \(address) failed: \(ssl)",
                    hint: "the coordinator refused this host's certificate, or it is not a Muster coordinator",
                    cause: UnderlyingError(error))
            }
            if let boring = error as? BoringSSLError {
                return MusterError(
                    .connectionFailed, "TLS with the coordinator at \(address) failed: \(boring)",
                    hint: "the coordinator refused this host's certificate (expired, revoked or from another cluster)",
                    cause: UnderlyingError(error))
            }
            return MusterError(
                .connectionFailed, "cannot connect to the coordinator at \(address): \(error)",
                cause: UnderlyingError(error))
        }

        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(Int64(connectTimeout.wireMilliseconds)))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let callback = trust.makeVerificationCallback { error in verificationFailure.set(error) }
                        let handler = try NIOSSLClientHandler(
                            context: tls, serverHostname: MusterPKI.coordinatorServerName,
                            customVerificationCallback: callback)
                        try channel.pipeline.syncOperations.addHandler(handler)
                        try channel.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(FrameDecoder(maximumFrameBytes: maxFrameBytes)))
                        try channel.pipeline.syncOperations.addHandler(FrameWriter())
                        return try Channel(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw preciseError(error)
        }
        do {
            return try await channel.executeThenClose { inbound, outbound in
                try await body(inbound, outbound)
            }
        } catch {
            throw preciseError(error)
        }
    }

    /// Reads the first frame as a message.
    ///
    /// - Throws: `MusterError` `.connectionFailed` when the coordinator closed the connection first.
    public static func firstMessage(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) async throws -> (
        Envelope, Message
    ) {
        for try await frame in inbound {
            let envelope = try Envelope(frame: frame)
            return (envelope, try Message(envelope))
        }
        throw MusterError(.connectionFailed, "the coordinator closed the connection without answering")
    }
}

/// The precise reason a server failed our verification callback (set on the event loop, read afterwards).
private final class FailureBox: Sendable {
    private let failure = Mutex<MusterError?>(nil)
    func set(_ error: MusterError) { failure.withLock { $0 = error } }
    var value: MusterError? { failure.withLock { $0 } }
}
