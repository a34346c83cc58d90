import Foundation
import NIOCore
import NIOPosix
import Shared

/// `checkHealth`: the node's health report plus operator-chosen probes — HTTP URLs (status 200–399), TCP
/// ports that must accept a connection, and paths that must exist. Read-only, so running it twice is harmless.
///
/// Spec (every field optional): `{"http": ["http://127.0.0.1:8080/healthz"], "tcp": ["127.0.0.1:5432"],
/// "paths": ["/var/lib/muster"], "timeoutMilliseconds": 2000, "waitSeconds": 60}`. The task fails (code
/// `VERIFICATION_FAILED`, the full result in the error's details) when any probe fails.
///
/// With `waitSeconds` (0…3600) every probe runs again about every 500 ms until all pass or the time is up (a
/// service that is still starting); the result or failure is that of the last round and the report says how many
/// rounds ran (`rounds`). Without it the probes run once.
public struct CheckHealth: TaskHandler {
    public struct Spec: Codable, Sendable, Equatable {
        public var http: [String]?
        public var tcp: [String]?
        public var paths: [String]?
        /// HTTP requests with an expected status and JSON values (the seed profile's checks).
        public var requests: [Request]?
        public var timeoutMilliseconds: Int?
        /// Retry every probe until all pass or this many seconds have passed (0…3600).
        public var waitSeconds: Int?

        public init(
            http: [String]? = nil, tcp: [String]? = nil, paths: [String]? = nil, requests: [Request]? = nil,
            timeoutMilliseconds: Int? = nil, waitSeconds: Int? = nil
        ) {
            self.http = http
            self.tcp = tcp
            self.paths = paths
            self.requests = requests
            self.timeoutMilliseconds = timeoutMilliseconds
            self.waitSeconds = waitSeconds
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
        /// How many times the probes ran (set only with ``Spec/waitSeconds``).
        public var rounds: Int?
    }

    /// Pause between two rounds of probes while waiting.
    static let retryInterval = Duration.milliseconds(500)

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
                    + "\"paths\": [PATH], \"timeoutMilliseconds\": N, \"waitSeconds\": N}: \(error)")
        }
        if let wait = checks.waitSeconds, !(0...3600).contains(wait) {
            throw TaskFailure(code: .invalidInput, message: "waitSeconds must be 0…3600, not \(wait)")
        }
        let timeout = Duration.milliseconds(min(max(checks.timeoutMilliseconds ?? 3000, 10), 60000))
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(checks.waitSeconds ?? 0))
        var rounds = 0
        var outcomes: [Check]
        while true {
            rounds += 1
            outcomes = await Self.round(checks, timeout: timeout, progress: progress)
            guard checks.waitSeconds != nil, outcomes.contains(where: { !$0.ok }), clock.now < deadline else { break }
            try await Task.sleep(for: max(.zero, min(Self.retryInterval, deadline - clock.now)))
        }
        let failed = outcomes.filter { !$0.ok }
        let report = Report(
            healthy: failed.isEmpty, report: await collector.report(), checks: outcomes,
            rounds: checks.waitSeconds == nil ? nil : rounds)
        let value = try JSONValue(encoding: report)
        guard failed.isEmpty else {
            let waited = checks.waitSeconds.map { " (after \(rounds) rounds in \($0) s)" } ?? ""
            throw TaskFailure(
                code: .verificationFailed,
                message: "\(failed.count) of \(outcomes.count) health checks failed\(waited): "
                    + failed.map { "\($0.target): \($0.detail)" }.joined(separator: "; "),
                details: value)
        }
        return value
    }

    /// Runs every probe of `checks` once.
    static func round(_ checks: Spec, timeout: Duration, progress: TaskProgressReporter) async -> [Check] {
        var outcomes: [Check] = []
        let total =
            (checks.http?.count ?? 0) + (checks.tcp?.count ?? 0) + (checks.paths?.count ?? 0)
            + (checks.requests?.count ?? 0)
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
        for request in checks.requests ?? [] {
            outcomes.append(await Self.checkRequest(request, timeout: timeout))
            await progress(.object(["done": .number(Double(outcomes.count)), "total": .number(Double(total))]))
        }
        return outcomes
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
        do {
            let (status, _) = try await fetch(url, timeout: timeout, readBody: false)
            return done((200..<400).contains(status), "HTTP \(status)")
        } catch let error as MusterError {
            return done(false, error.message)
        } catch {
            return done(false, "\(error)")
        }
    }

    /// An HTTP request whose answer must have `status` (default 200) and, for each JSON pointer in `json`, that
    /// value in the JSON body (e.g. `{"/count": 20, "/mode": "postgres"}`).
    public struct Request: Codable, Sendable, Equatable {
        public var name: String?
        public var url: String
        public var status: Int?
        public var json: [String: JSONValue]?

        public init(name: String? = nil, url: String, status: Int? = nil, json: [String: JSONValue]? = nil) {
            self.name = name
            self.url = url
            self.status = status
            self.json = json
        }
    }

    static func checkRequest(_ request: Request, timeout: Duration) async -> Check {
        let clock = ContinuousClock()
        let start = clock.now
        let target = request.name.map { "\($0) (\(request.url))" } ?? request.url
        func done(_ ok: Bool, _ detail: String) -> Check {
            Check(
                kind: .http, target: target, ok: ok, detail: detail, milliseconds: (clock.now - start).wireMilliseconds)
        }
        do {
            let (status, body) = try await fetch(request.url, timeout: timeout, readBody: request.json != nil)
            let expected = request.status ?? 200
            guard status == expected else { return done(false, "HTTP \(status), expected \(expected)") }
            guard let expectations = request.json, !expectations.isEmpty else { return done(true, "HTTP \(status)") }
            let scan: JSONScan
            do {
                scan = try JSONScan(body)
            } catch let error as MusterError {
                return done(false, "HTTP \(status), but the body is \(error.message)")
            }
            var problems: [String] = []
            for (text, want) in expectations.sorted(by: { $0.key < $1.key }) {
                guard let pointer = try? JSONPointer(text) else {
                    problems.append("\(text) is not a JSON pointer")
                    continue
                }
                guard let range = scan.values.first(where: { pointer.matches($0.key) })?.value,
                    let found = try? JSONDecoder().decode(JSONValue.self, from: Data(body[range]))
                else {
                    problems.append("\(text) is missing")
                    continue
                }
                if found != want {
                    problems.append(
                        "\(text) is \(String(decoding: body[range].prefix(200), as: UTF8.self)), expected \(Self.render(want))"
                    )
                }
            }
            return problems.isEmpty
                ? done(true, "HTTP \(status), \(expectations.count) JSON values as expected")
                : done(false, problems.joined(separator: "; "))
        } catch let error as MusterError {
            return done(false, error.message)
        } catch {
            return done(false, "\(error)")
        }
    }

    static func render(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "\(value)"
    }

    /// Largest body read for JSON checks.
    static let maximumBodyBytes = 16 << 20

    /// GETs `url` over HTTP/1.0 (no keep-alive, no chunking) and returns the status and, when asked, the body.
    static func fetch(_ url: String, timeout: Duration, readBody: Bool) async throws -> (Int, [UInt8]) {
        guard let components = URLComponents(string: url), components.scheme == "http", let host = components.host
        else {
            throw MusterError(.invalidInput, "only http://HOST[:PORT]/PATH URLs are supported")
        }
        let port = components.port ?? 80
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        let query = components.percentEncodedQuery.map { "?\($0)" } ?? ""
        let request =
            "GET \(path)\(query) HTTP/1.0\r\nHost: \(host):\(port)\r\nUser-Agent: muster-agent/\(MusterVersion.current)\r\nConnection: close\r\n\r\n"
        let answer: [UInt8] = try await withDeadline(
            timeout, onTimeout: { MusterError(.timeout, "no answer within \(timeout)") }
        ) {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(Int64(timeout.wireMilliseconds)))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: request))
                var received: [UInt8] = []
                for try await chunk in inbound {
                    received.append(contentsOf: chunk.readableBytesView)
                    if !readBody, received.contains(0x0A) { break }
                    if received.count > maximumBodyBytes {
                        throw MusterError(.invalidInput, "the answer is larger than \(maximumBodyBytes) bytes")
                    }
                }
                return received
            }
        }
        let lineEnd = answer.firstIndex(of: 0x0A) ?? answer.endIndex
        guard
            let status = parseStatus(
                String(decoding: answer[..<lineEnd], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        else {
            throw MusterError(.protocolError, "not an HTTP answer")
        }
        var bodyStart = answer.endIndex
        if let range = answer.firstRange(of: [0x0D, 0x0A, 0x0D, 0x0A]) {
            bodyStart = range.upperBound
        } else if let range = answer.firstRange(of: [0x0A, 0x0A]) {
            bodyStart = range.upperBound
        }
        return (status, Array(answer[bodyStart...]))
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
