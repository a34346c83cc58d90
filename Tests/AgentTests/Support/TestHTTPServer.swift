import NIOCore
import NIOPosix
import Shared

/// A real HTTP/1.0 server on a loopback port for probe tests: reads each request's head and writes what `answer`
/// returns for it (the whole response: status line, headers, body), then closes the connection.
enum TestHTTPServer {
    static func with(
        answer: @escaping @Sendable (_ request: String) -> String, _ body: @Sendable (_ port: Int) async throws -> Void
    ) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { child in
                child.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        let port = server.channel.localAddress?.port ?? 0
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await serveConnections(of: server) { connection in
                    try? await connection.executeThenClose { inbound, outbound in
                        var request = ""
                        for try await chunk in inbound {
                            request += String(buffer: chunk)
                            if request.contains("\r\n\r\n") { break }
                        }
                        try await outbound.write(ByteBuffer(string: answer(request)))
                    }
                }
            }
            defer { group.cancelAll() }
            try await body(port)
        }
    }
}
