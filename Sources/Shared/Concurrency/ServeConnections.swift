import NIOCore

/// Runs `handle` for every connection a bound server channel accepts, until the calling task is cancelled (or the
/// server channel closes); then closes the server channel, cancels the running handlers and waits for them.
///
/// Cancelling a plain `for try await connection in server.inbound` loop drops connections that were accepted but
/// not yet taken from the stream; their `NIOAsyncChannel` writers are released without `finish()` and NIO traps
/// ("Deinited NIOAsyncWriter without calling finish()", apple/swift-nio#2813, #3481). Here the accept loop runs in
/// its own task that is never cancelled: cancellation closes the server channel instead, the stream then hands
/// out what it buffered and ends, and each of those connections is handed to a cancelled handler, whose
/// `executeThenClose` closes it properly.
public func serveConnections<Connection: Sendable>(
    of server: NIOAsyncChannel<Connection, Never>,
    _ handle: @escaping @Sendable (Connection) async -> Void
) async throws {
    let loop = Task {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    group.addTask { await handle(connection) }
                }
                // The server channel closed (shutdown): end the connections still being served.
                group.cancelAll()
            }
        }
    }
    try await withTaskCancellationHandler {
        try await loop.value
    } onCancel: {
        server.channel.close(promise: nil)
    }
}
