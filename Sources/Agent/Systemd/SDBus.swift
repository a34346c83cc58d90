import CSystemd
import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// One sd-bus connection, confined to its own serial queue.
///
/// sd-bus objects are "thread-agnostic and only a single thread may operate on a given object at any given time",
/// and `sd_bus_call` blocks; so every use of the connection runs on `queue`, never on the cooperative pool, and
/// callers get `async` methods through a checked continuation (STYLE §3.4).
// @unchecked Sendable: the only mutable state is the C connection, touched exclusively on the serial `queue`.
final class SDBus: @unchecked Sendable {
    /// Which bus to connect to.
    enum Address: Sendable, Hashable, CustomStringConvertible {
        /// The system bus (`sd_bus_open_system`), as the agent uses in production.
        case system
        /// The calling user's bus from `DBUS_SESSION_BUS_ADDRESS`/`XDG_RUNTIME_DIR` (`sd_bus_open_user`).
        case user
        /// A message bus at an explicit address, e.g. `unix:path=/tmp/x/xdg/bus`; we are a bus client.
        case bus(String)
        /// A peer-to-peer connection straight to a manager, e.g. `unix:path=/run/systemd/private`.
        case direct(String)

        var description: String {
            switch self {
            case .system: "system bus"
            case .user: "user bus"
            case .bus(let a): "bus \(a)"
            case .direct(let a): "manager socket \(a)"
            }
        }
    }

    let address: Address
    private let bus: OpaquePointer
    private let queue: DispatchQueue

    private init(address: Address, bus: OpaquePointer, queue: DispatchQueue) {
        self.address = address
        self.bus = bus
        self.queue = queue
    }

    deinit {
        // The last reference: no closure on `queue` can still hold the connection.
        sd_bus_flush_close_unref(bus)
    }

    /// Connects (blocking, on the new connection's queue).
    ///
    /// The corresponding C functions are `sd_bus_open_system`, `sd_bus_open_user`, or `sd_bus_new` +
    /// `sd_bus_set_address` + `sd_bus_set_bus_client` + `sd_bus_start`.
    static func open(_ address: Address, description: String = "muster-agent") async throws -> SDBus {
        let queue = DispatchQueue(label: "muster.sdbus.\(description)")
        let box: UnsafeBus = try await withCheckedThrowingContinuation { continuation in
            queue.async {
                do {
                    continuation.resume(returning: UnsafeBus(pointer: try connect(address)))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
        return SDBus(address: address, bus: box.pointer, queue: queue)
    }

    private static func connect(_ address: Address) throws(SDBusError) -> OpaquePointer {
        var bus: OpaquePointer? = nil
        switch address {
        case .system:
            try sdCall("sd_bus_open_system") { _ in sd_bus_open_system(&bus) }
        case .user:
            try sdCall("sd_bus_open_user") { _ in sd_bus_open_user(&bus) }
        case .bus(let text), .direct(let text):
            try sdCall("sd_bus_new") { _ in sd_bus_new(&bus) }
            guard let created = bus else {
                throw SDBusError(
                    name: nil, message: "sd_bus_new returned no bus", errno: ENOMEM, function: "sd_bus_new")
            }
            do {
                try sdCall("sd_bus_set_address") { _ in text.withCString { sd_bus_set_address(created, $0) } }
                let client: Int32 = if case .bus = address { 1 } else { 0 }
                try sdCall("sd_bus_set_bus_client") { _ in sd_bus_set_bus_client(created, client) }
                try sdCall("sd_bus_start") { _ in sd_bus_start(created) }
            } catch {
                sd_bus_flush_close_unref(created)
                throw error
            }
        }
        guard let bus else {
            throw SDBusError(name: nil, message: "no bus returned", errno: ENOMEM, function: "sd_bus_open")
        }
        return bus
    }

    /// Runs `body` on the connection's queue with exclusive access to the connection.
    ///
    /// The closure may make several calls; only `Sendable` results leave it (messages stay behind).
    func perform<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { [self] in
                do {
                    continuation.resume(returning: try body(Connection(bus: bus)))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Synchronous access to the connection, valid only inside ``SDBus/perform(_:)``.
    struct Connection {
        fileprivate let bus: OpaquePointer

        /// Creates a method call message. The corresponding C function is `sd_bus_message_new_method_call`.
        func methodCall(
            destination: String?, path: String, interface: String, member: String
        ) throws(SDBusError) -> SDBusMessage {
            var m: OpaquePointer? = nil
            let bus = self.bus
            try sdCall("sd_bus_message_new_method_call") { _ in
                withOptionalCString(destination) { dest in
                    sd_bus_message_new_method_call(bus, &m, dest, path, interface, member)
                }
            }
            guard let m else {
                throw SDBusError(
                    name: nil, message: "no message", errno: ENOMEM, function: "sd_bus_message_new_method_call")
            }
            return SDBusMessage(adopting: m)
        }

        /// Sends `message` and waits for the reply (or the D-Bus error, thrown as ``SDBusError``).
        ///
        /// - Parameter timeoutMicroseconds: 0 uses libsystemd's default (25 s).
        /// The corresponding C function is `sd_bus_call`.
        func call(_ message: SDBusMessage, timeoutMicroseconds: UInt64 = 0) throws(SDBusError) -> SDBusMessage {
            var reply: OpaquePointer? = nil
            let bus = self.bus
            try sdCall("sd_bus_call") { error in sd_bus_call(bus, message.raw, timeoutMicroseconds, error, &reply) }
            guard let reply else {
                throw SDBusError(name: nil, message: "no reply", errno: EBADMSG, function: "sd_bus_call")
            }
            return SDBusMessage(adopting: reply)
        }

        /// Builds a method call, lets `append` add arguments, sends it and returns the reply.
        ///
        /// The corresponding C functions are `sd_bus_message_new_method_call` and `sd_bus_call`.
        func call(
            destination: String?, path: String, interface: String, member: String,
            append: (SDBusMessage) throws(SDBusError) -> Void = { _ in }
        ) throws(SDBusError) -> SDBusMessage {
            let message = try methodCall(destination: destination, path: path, interface: interface, member: member)
            try append(message)
            return try call(message)
        }

        /// Reads a string property. The corresponding C function is `sd_bus_get_property_string`.
        func stringProperty(destination: String?, path: String, interface: String, member: String)
            throws(SDBusError) -> String
        {
            var out: UnsafeMutablePointer<CChar>? = nil
            let bus = self.bus
            try sdCall("sd_bus_get_property_string") { error in
                withOptionalCString(destination) { dest in
                    sd_bus_get_property_string(bus, dest, path, interface, member, error, &out)
                }
            }
            // sd_bus_get_property_string returns a malloc'd copy that we own.
            defer { free(out) }
            return out.map { String(cString: $0) } ?? ""
        }

        /// Reads a fixed-size property (`u`, `t`, `i`, `b` as `Int32`…). The corresponding C function is
        /// `sd_bus_get_property_trivial`.
        func trivialProperty<T: BitwiseCopyable>(
            destination: String?, path: String, interface: String, member: String, type: Character, zero: T
        ) throws(SDBusError) -> T {
            var value = zero
            let bus = self.bus
            let t = CChar(bitPattern: type.asciiValue ?? 0)
            try sdCall("sd_bus_get_property_trivial") { error in
                withOptionalCString(destination) { dest in
                    sd_bus_get_property_trivial(bus, dest, path, interface, member, error, t, &value)
                }
            }
            return value
        }
    }

    /// Encodes `id` as the last element of an object path under `prefix` (every byte outside `[A-Za-z0-9]`
    /// becomes `_xx`). The corresponding C function is `sd_bus_path_encode`.
    static func encodePath(prefix: String, id: String) throws(SDBusError) -> String {
        var out: UnsafeMutablePointer<CChar>? = nil
        try sdCall("sd_bus_path_encode") { _ in sd_bus_path_encode(prefix, id, &out) }
        defer { free(out) }
        return out.map { String(cString: $0) } ?? prefix
    }
}

/// Carries a freshly opened connection from the bus queue to the caller.
// @unchecked Sendable: handed over exactly once, from the opening closure to `SDBus.init`; never shared.
private struct UnsafeBus: @unchecked Sendable {
    let pointer: OpaquePointer
}

private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}

// MARK: - sd-daemon

/// The sd-daemon calls ``SDNotify`` needs; kept here so that only `SDBus*.swift` imports `CSystemd`.
enum SDDaemon {
    /// Sends a preformatted state string (`READY=1\nSTATUS=…`) to the service manager.
    ///
    /// - Returns: `true` if sent, `false` when `NOTIFY_SOCKET` is unset (not run by systemd).
    /// - Throws: ``SDBusError`` when sending failed.
    /// The corresponding C function is `sd_notify`.
    static func notify(_ state: String) throws(SDBusError) -> Bool {
        let rc = try sdCall("sd_notify") { _ in sd_notify(0, state) }
        return rc > 0
    }

    /// The watchdog interval systemd expects pings within (`WATCHDOG_USEC` for this process), or `nil`.
    /// The corresponding C function is `sd_watchdog_enabled`.
    static func watchdogMicroseconds() throws(SDBusError) -> UInt64? {
        var usec: UInt64 = 0
        let rc = try sdCall("sd_watchdog_enabled") { _ in sd_watchdog_enabled(0, &usec) }
        return rc > 0 && usec > 0 ? usec : nil
    }
}

// MARK: - sd-journal

/// Reads a unit's last journal messages; kept here so that only `SDBus*.swift` imports `CSystemd`.
enum SDJournal {
    /// The last `lines` `MESSAGE=` fields logged by `unit` (`_SYSTEMD_UNIT=`) or about it by the manager
    /// (`UNIT=` / `USER_UNIT=`), oldest first. Blocking: call it off the cooperative pool.
    ///
    /// - Parameter directory: a journal directory to read (e.g. a test node's `/run/log/journal`); `nil` reads
    ///   the local system's journals.
    /// The corresponding C functions are `sd_journal_open`/`sd_journal_open_directory`, `sd_journal_add_match`,
    /// `sd_journal_seek_tail`, `sd_journal_previous` and `sd_journal_get_data`.
    static func tail(unit: String, lines: Int, directory: String?) throws(SDBusError) -> [String] {
        var journal: OpaquePointer? = nil
        if let directory {
            try sdCall("sd_journal_open_directory") { _ in sd_journal_open_directory(&journal, directory, 0) }
        } else {
            try sdCall("sd_journal_open") { _ in sd_journal_open(&journal, Int32(SD_JOURNAL_LOCAL_ONLY)) }
        }
        guard let j = journal else { return [] }
        defer { sd_journal_close(j) }
        let fields = ["_SYSTEMD_UNIT", "UNIT", "USER_UNIT"]
        for (index, field) in fields.enumerated() {
            if index > 0 { try sdCall("sd_journal_add_disjunction") { _ in sd_journal_add_disjunction(j) } }
            let match = Array("\(field)=\(unit)".utf8)
            try sdCall("sd_journal_add_match") { _ in
                match.withUnsafeBytes { sd_journal_add_match(j, $0.baseAddress, $0.count) }
            }
        }
        try sdCall("sd_journal_seek_tail") { _ in sd_journal_seek_tail(j) }
        var out: [String] = []
        while out.count < lines, try sdCall("sd_journal_previous", { _ in sd_journal_previous(j) }) > 0 {
            var data: UnsafeRawPointer? = nil
            var length = 0
            let rc = sd_journal_get_data(j, "MESSAGE", &data, &length)
            guard rc >= 0, let data else { continue }
            // The field comes back as "MESSAGE=text" (not NUL-terminated).
            let bytes = UnsafeRawBufferPointer(start: data, count: length)
            out.append(String(decoding: bytes.dropFirst("MESSAGE=".utf8.count), as: UTF8.self))
        }
        return out.reversed()
    }
}
