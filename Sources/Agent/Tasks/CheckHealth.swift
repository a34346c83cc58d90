import Foundation
import NIOCore
import NIOPosix
import Shared

/// `checkHealth`: the node's health report plus operator-chosen probes — HTTP URLs (status 200–399), TCP
/// ports that must accept a connection, and paths that must exist. Read-only, so running it twice is harmless.
///
/// Spec (every field optional): `{"http": ["http://127.0.0.1:8080/healthz"], "tcp": ["127.0.0.1:5432"],
/// "paths": ["/var/lib/muster"], "timeoutMilliseconds": 2000}`. The task fails (code `VERIFICATION_FAILED`,
/// the full result in the error's details) when any probe fails.
public struct CheckHealth: TaskHandler {
    public struct Spec: Codable, Sendable, Equatable {
        public var http: [String]?
        public var tcp: [String]?
        public var paths: [String]?
        public var timeoutMilliseconds: Int?

        public init(
            http: [String]? = nil, tcp: [String]? = nil, paths: [String]? = nil, timeoutMilliseconds: Int? = nil
        ) {
            self.http = http
            self.tcp = tcp
            self.paths = paths
            self.timeoutMilliseconds = timeoutMilliseconds
        }
    }

    /// One probe's outcome.
    public struct Check: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable {
            case http
            case tcp
            case path
        }
        public var kind: Kind
        public var target: String
        public var ok: Bool
        /// What was found ("HTTP 200", "connected", "directory, 4096 bytes") or why it failed.
        public var detail: String
        public var milliseconds: Int
    }

    public struct Report: Codable, Sendable, Equatable {
        public var healthy: Bool
        public var report: HealthReport
        public var checks: [Check]
    }

    let collector: HealthCollector

    public init(collector: HealthCollector) {
        self.collector = collector
    }

    public func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let checks: Spec
        do {
            checks = try spec.decode(Spec.self)
        } catch {
            throw TaskFailure(
                code: .invalidInput,
                message: "the checkHealth spec must look like {\"http\": [URL], \"tcp\": [\"HOST:PORT\"], "
                    + "\"paths\": [PATH], \"timeoutMilliseconds\": N}: \(error)")
        }
        let timeout = Duration.milliseconds(min(max(checks.timeoutMilliseconds ?? 3000, 10), 60000))
        var outcomes: [Check] = []
        let total = (checks.http?.count ?? 0) + (checks.tcp?.count ?? 0) + (checks.paths?.count ?? 0)
        for path in checks.paths ?? [] {
            outcomes.append(Self.checkPath(path))
        }
        for target in checks.tcp ?? [] {
            outcomes.append(await Self.checkTCP(target, timeout: timeout))
            await progress(.object(["done": .number(Double(outcomes.count)), "total": .number(Double(total))]))
        }
        for url in checks.http ?? [] {
            outcomes.append(await Self.checkHTTP(url, timeout: timeout))
            await progress(.object(["done": .number(Double(outcomes.count)), "total": .number(Double(total))]))
        }
        let failed = outcomes.filter { !$0.ok }
        let report = Report(healthy: failed.isEmpty, report: await collector.report(), checks: outcomes)
        let value = try JSONValue(encoding: report)
        guard failed.isEmpty else {
            throw TaskFailure(
                code: .verificationFailed,
                message: "\(failed.count) of \(outcomes.count) health checks failed: "
                    + failed.map { "\($0.target): \($0.detail)" }.joined(separator: "; "),
                details: value)
        }
        return value
    }

    // MARK: - Probes

    static func checkPath(_ path: String) -> Check {
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: path)
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? "does not exist or cannot be read"
            return Check(kind: .path, target: path, ok: false, detail: reason, milliseconds: 0)
        }
        let type: String =
            switch attributes[.type] as? FileAttributeType {
            case .typeDirectory?: "directory"
            case .typeRegular?: "file"
            case .typeSymbolicLink?: "symlink"
            case .typeSocket?: "socket"
            default: "special file"
            }
        let size = (attributes[.size] as? NSNumber)?.uint64Value ?? 0
        return Check(kind: .path, target: path, ok: true, detail: "\(type), \(size) bytes", milliseconds: 0)
    }

    static func checkTCP(_ target: String, timeout: Duration) async -> Check {
        let clock = ContinuousClock()
        let start = clock.now
        func done(_ ok: Bool, _ detail: String) -> Check {
            Check(
                kind: .tcp, target: target, ok: ok, detail: detail, milliseconds: (clock.now - start).wireMilliseconds)
        }
        guard let (host, port) = splitHostPort(target) else {
            return done(false, "not HOST:PORT")
        }
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(Int64(timeout.wireMilliseconds)))
                .connect(host: host, port: port).get()
            try? await channel.close()
            return done(true, "connected")
        } catch {
            return done(false, "\(error)")
        }
    }

    static func checkHTTP(_ url: String, timeout: Duration) async -> Check {
        let clock = ContinuousClock()
        let start = clock.now
        func done(_ ok: Bool, _ detail: String) -> Check {
            Check(kind: .http, target: url, ok: ok, detail: detail, milliseconds: (clock.now - start).wireMilliseconds)
        }
        guard let components = URLComponents(string: url), components.scheme == "http", let host = components.host
        else {
            return done(false, "only http://HOST[:PORT]/PATH URLs are supported")
        }
        let port = components.port ?? 80
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        let query = components.percentEncodedQuery.map { "?\($0)" } ?? ""
        let request =
            "GET \(path)\(query) HTTP/1.0\r\nHost: \(host):\(port)\r\nUser-Agent: muster-agent/\(MusterVersion.current)\r\nConnection: close\r\n\r\n"
        do {
            let status = try await withThrowingTaskGroup(of: Int?.self) { group in
                group.addTask {
                    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .connectTimeout(.milliseconds(Int64(timeout.wireMilliseconds)))
                        .connect(host: host, port: port) { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                            }
                        }
                    return try await channel.executeThenClose { inbound, outbound in
                        try await outbound.write(ByteBuffer(string: request))
                        var head = ""
                        for try await chunk in inbound {
                            head += String(buffer: chunk)
                            if let end = head.range(of: "\r\n") {
                                return parseStatus(String(head[..<end.lowerBound]))
                            }
                            if head.count > 8192 { break }
                        }
                        return parseStatus(head)
                    }
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw MusterError(.timeout, "no answer within \(timeout)")
                }
                defer { group.cancelAll() }
                return try await group.next() ?? nil
            }
            guard let status else { return done(false, "not an HTTP answer") }
            return done((200..<400).contains(status), "HTTP \(status)")
        } catch let error as MusterError {
            return done(false, error.message)
        } catch {
            return done(false, "\(error)")
        }
    }

    /// "HTTP/1.1 200 OK" → 200.
    static func parseStatus(_ line: String) -> Int? {
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/") else { return nil }
        return Int(parts[1])
    }

    /// "host:port" or "[v6]:port".
    static func splitHostPort(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }
}
