import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Shared

/// The CLI's HTTPS client for the admin API: one HTTP/1.1 request per connection over NIO + NIOSSL, presenting
/// the admin client certificate and verifying the coordinator against the cluster CA.
///
/// Written on NIO directly (ClientBootstrap, `NIOAsyncChannel`) instead of adding async-http-client: the CLI
/// makes one small request per run and the pieces are already dependencies.
public struct AdminClient: Sendable {
    public let configuration: AdminClientConfiguration
    /// Whole request deadline.
    public var timeout: Duration = .seconds(30)
    /// Present the admin certificate (tests turn it off to check that `/v1` refuses anonymous clients).
    public var presentsClientCertificate = true

    public init(configuration: AdminClientConfiguration) {
        self.configuration = configuration
    }

    /// A raw response.
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: Data
    }

    /// Sends a request and decodes a JSON answer; an error answer becomes the server's ``MusterError``.
    public func send<Output: Decodable>(
        _ method: HTTPMethod, _ path: String, body: (some Encodable)? = nil as String?, as type: Output.Type
    ) async throws -> Output {
        let bodyData = try body.map { try MusterJSON.encoder().encode($0) }
        let response = try await raw(method, path, body: bodyData)
        guard (200..<300).contains(response.status) else { throw Self.error(from: response) }
        do {
            return try MusterJSON.decoder().decode(Output.self, from: response.body)
        } catch {
            throw MusterError(.internal, "the coordinator's answer to \(method) \(path) could not be read: \(error)")
        }
    }

    /// Turns an error response into the server's ``MusterError`` (code, message, hint).
    static func error(from response: Response) -> MusterError {
        if let body = try? MusterJSON.decoder().decode(AdminErrorBody.self, from: response.body) {
            return MusterError(MusterError.Code(wireName: body.code), body.message, hint: body.hint)
        }
        return MusterError(
            .internal,
            "the coordinator answered HTTP \(response.status): \(String(decoding: response.body.prefix(300), as: UTF8.self))"
        )
    }

    /// Sends one request and collects the whole response.
    /// - Throws: ``MusterError`` `.connectionFailed` when the coordinator cannot be reached or TLS fails.
    public func raw(_ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> Response {
        try await raw(method, path, body: body.map { .data($0) })
    }

    /// A request body: bytes in memory, or a file streamed in 1 MiB reads (module uploads of any size).
    public enum Body: Sendable {
        case data(Data)
        case file(path: String, size: UInt64)

        var count: UInt64 {
            switch self {
            case .data(let data): UInt64(data.count)
            case .file(_, let size): size
            }
        }
    }

    /// Streams a file as the body of `method path` and decodes the JSON answer.
    public func upload<Output: Decodable>(
        _ method: HTTPMethod, _ path: String, file: String, as type: Output.Type
    ) async throws -> Output {
        guard let status = FileStatus.lstat(file), status.kind == .regular else {
            throw MusterError(.notFound, "\(file) does not exist or is not a regular file")
        }
        let response = try await raw(method, path, body: .file(path: file, size: status.size))
        guard (200..<300).contains(response.status) else { throw Self.error(from: response) }
        do {
            return try MusterJSON.decoder().decode(Output.self, from: response.body)
        } catch {
            throw MusterError(.internal, "the coordinator's answer to \(method) \(path) could not be read: \(error)")
        }
    }

    /// Sends one request with `body` and collects the whole response.
    public func raw(_ method: HTTPMethod, _ path: String, body: Body?) async throws -> Response {
        let address = try CoordinatorConfiguration.ListenAddress(
            parsing: configuration.adminAddress, option: "adminAddress")
        let tls: NIOSSLContext
        do {
            let read = { (file: String) throws -> String in
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw MusterError(
                        .connectionFailed, "cannot read \(file)",
                        hint: "run the CLI as a user who can read the state directory")
                }
                return String(decoding: data, as: UTF8.self)
            }
            var tlsConfiguration = try TLSConfiguration.musterAdminClient(
                certificatePEM: try read(configuration.certFile), privateKeyPEM: try read(configuration.keyFile),
                caCertificatePEM: try read(configuration.caFile))
            if !presentsClientCertificate {
                tlsConfiguration.certificateChain = []
                tlsConfiguration.privateKey = nil
            }
            tls = try NIOSSLContext(configuration: tlsConfiguration)
        } catch let error as MusterError {
            throw error
        } catch {
            throw MusterError(.connectionFailed, "cannot load the admin client certificate: \(error)")
        }
        let serverName = configuration.serverName
        let host = address.host
        let headers = HTTPHeaders([
            ("Host", configuration.adminAddress), ("User-Agent", "muster/\(MusterVersion.current)"),
            ("Accept", "application/json"), ("Connection", "close"),
            ("Content-Type", "application/json"), ("Content-Length", "\(body?.count ?? 0)"),
        ])
        let timeout = self.timeout
        do {
            let adminAddress = configuration.adminAddress
            return try await withDeadline(
                timeout,
                onTimeout: {
                    MusterError(.timeout, "the coordinator at \(adminAddress) did not answer within \(timeout)")
                }
            ) {
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connectTimeout(.seconds(5))
                    .connect(host: host, port: address.port) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            let handler = try NIOSSLClientHandler(context: tls, serverHostname: serverName)
                            try channel.pipeline.syncOperations.addHandler(handler)
                            try channel.pipeline.syncOperations.addHTTPClientHandlers()
                            return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                                wrappingChannelSynchronously: channel)
                        }
                    }
                return try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(
                        .head(HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)))
                    switch body {
                    case .data(let data):
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: data))))
                    case .file(let file, let size):
                        try await Self.stream(file, size: size, to: outbound)
                    case nil:
                        break
                    }
                    try await outbound.write(.end(nil))
                    var status = 0
                    var responseHeaders: [(String, String)] = []
                    var collected = ByteBuffer()
                    for try await part in inbound {
                        switch part {
                        case .head(let head):
                            status = Int(head.status.code)
                            responseHeaders = head.headers.map { ($0.name, $0.value) }
                        case .body(var chunk):
                            collected.writeBuffer(&chunk)
                        case .end:
                            return Response(
                                status: status, headers: responseHeaders, body: Data(collected.readableBytesView))
                        }
                    }
                    throw MusterError(.connectionFailed, "the coordinator closed the connection mid-answer")
                }
            }
        } catch let error as MusterError {
            throw error
        } catch {
            throw MusterError(
                .connectionFailed,
                "cannot reach the coordinator's admin API at \(configuration.adminAddress): \(error)",
                hint: "is `muster serve` running? The address comes from admin.json in the state directory")
        }
    }
}

extension AdminClient {
    /// Writes a file to the request in 1 MiB chunks; the writer waits while the socket is not writable.
    static func stream(
        _ path: String, size: UInt64, to outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    ) async throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw MusterError(.notFound, "cannot open \(path)")
        }
        defer { try? handle.close() }
        var sent: UInt64 = 0
        while sent < size {
            let data = try handle.read(upToCount: Int(min(1 << 20, size - sent))) ?? Data()
            guard !data.isEmpty else {
                throw MusterError(.io, "\(path) shrank while it was uploaded (\(sent) of \(size) bytes)")
            }
            sent += UInt64(data.count)
            try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: data))))
        }
    }
}

/// The error body the admin API sends (see ``AdminError``).
public struct AdminErrorBody: Codable, Sendable {
    var code: String
    var message: String
    var hint: String?
}
