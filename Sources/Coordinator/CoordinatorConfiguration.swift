import Foundation
import Logging
import Shared

/// Everything `muster serve` needs to know, as a value. Defaults live in the initialisers; loading from
/// flags, environment and a file is in `CoordinatorConfiguration+File.swift`.
public struct CoordinatorConfiguration: Sendable, Equatable {
    /// A `HOST:PORT` to listen on; port 0 picks a free port.
    public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// Parses `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` (all interfaces).
        /// - Throws: ``MusterError`` `.usage` naming the option.
        public init(parsing text: String, option: String) throws {
            var host: Substring
            var port: Substring
            if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
                host = text[text.index(after: text.startIndex)..<close]
                port = text[close...].dropFirst().drop { $0 == ":" }
            } else if let colon = text.lastIndex(of: ":") {
                host = text[..<colon]
                port = text[text.index(after: colon)...]
            } else {
                throw MusterError(.usage, "\(option) '\(text)' is not HOST:PORT", hint: "for example 0.0.0.0:7400")
            }
            if host.isEmpty { host = "0.0.0.0" }
            guard let number = Int(port), (0...65535).contains(number) else {
                throw MusterError(.usage, "\(option) '\(text)' has no valid port (0–65535)")
            }
            self.init(host: String(host), port: number)
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        /// Whether the host is the any-address.
        var isWildcard: Bool { host == "0.0.0.0" || host == "::" || host == "*" }
    }

    /// Heartbeats and node liveness.
    public struct Heartbeats: Sendable, Equatable {
        /// The shortest interval the listener assigns (it scales up to stay within ``budgetPerSecond``).
        public var minimumInterval: Duration = .seconds(10)
        /// Extra time after a missed heartbeat before a node is unreachable.
        public var grace: Duration = .seconds(20)
        /// After the coordinator starts, nobody is marked unreachable for this long (agents reconnect first).
        public var failoverGrace: Duration = .seconds(300)
        /// Cluster-wide heartbeats per second one coordinator aims for (Nomad style).
        public var budgetPerSecond: Double = 50
        /// How often queued heartbeats are written (one statement per flush).
        public var flushInterval: Duration = .milliseconds(250)

        public init() {}
    }

    /// `<state-dir>`: PKI, embedded PostgreSQL, `admin.json`.
    public var stateDirectory: String
    /// `postgres://…`; `nil` runs the embedded PostgreSQL under `<state-dir>/pg`.
    public var databaseURL: String?
    /// How long boot waits for the database before giving up with an error.
    public var databaseBootTimeout: Duration
    /// The agent listener (mutual TLS).
    public var agentListen: ListenAddress
    /// The admin API (HTTPS).
    public var adminListen: ListenAddress
    /// Host agents dial (join command, certificate SANs); `nil` means this machine's hostname.
    public var advertise: String?
    public var heartbeats: Heartbeats
    public var logLevel: Logger.Level

    public init(
        stateDirectory: String = "/var/lib/muster", databaseURL: String? = nil,
        databaseBootTimeout: Duration = .seconds(30),
        agentListen: ListenAddress = .init(host: "0.0.0.0", port: 7400),
        adminListen: ListenAddress = .init(host: "0.0.0.0", port: 7401), advertise: String? = nil,
        heartbeats: Heartbeats = .init(), logLevel: Logger.Level = .info
    ) {
        self.stateDirectory = stateDirectory
        self.databaseURL = databaseURL
        self.databaseBootTimeout = databaseBootTimeout
        self.agentListen = agentListen
        self.adminListen = adminListen
        self.advertise = advertise
        self.heartbeats = heartbeats
        self.logLevel = logLevel
    }

    /// The advertised host: ``advertise``, else the listen host when specific, else the hostname.
    public var advertisedHost: String {
        if let advertise, !advertise.isEmpty { return advertise }
        if !agentListen.isWildcard { return agentListen.host }
        return ProcessInfo.processInfo.hostName
    }

    public var pkiDirectory: String { "\(stateDirectory)/pki" }
    public var embeddedPostgresDirectory: String { "\(stateDirectory)/pg" }
    public var adminClientFile: String { "\(stateDirectory)/\(AdminClientConfiguration.fileName)" }
}
