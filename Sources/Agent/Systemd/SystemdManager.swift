import Shared

/// Speaks units to one systemd manager (the system manager, or a user manager with `--systemd user`) over D-Bus.
///
/// Never sees C: messages are built and read through ``SDBus`` / ``SDBusMessage``. Every call runs on the
/// connection's serial queue; waiting for a unit polls its state with `Task.sleep`.
struct SystemdManager: Sendable {
    /// Which manager the agent drives (`--systemd system|user`).
    typealias Scope = SystemdScope

    /// How `StartUnit`/`StopUnit` queue their job (systemd's job modes).
    enum JobMode: String, Sendable {
        case replace
        case fail
        case isolate
        case ignoreDependencies = "ignore-dependencies"
        case ignoreRequirements = "ignore-requirements"
    }

    static let destination = "org.freedesktop.systemd1"
    static let managerPath = "/org/freedesktop/systemd1"
    static let managerInterface = "org.freedesktop.systemd1.Manager"
    static let unitInterface = "org.freedesktop.systemd1.Unit"
    static let serviceInterface = "org.freedesktop.systemd1.Service"
    static let mountInterface = "org.freedesktop.systemd1.Mount"
    static let jobInterface = "org.freedesktop.systemd1.Job"
    static let propertiesInterface = "org.freedesktop.DBus.Properties"

    let bus: SDBus

    /// Connects to the manager of `scope` (the system bus, or the user bus from the environment).
    static func connect(_ scope: Scope) async throws -> SystemdManager {
        try await connect(scope == .system ? SDBus.Address.system : SDBus.Address.user)
    }

    /// Connects through an explicit address, e.g. `.bus("unix:path=/tmp/node/xdg/bus")` (tests pass the address
    /// instead of changing the process environment).
    /// - Throws: ``MusterError`` `.connectionFailed`.
    static func connect(_ address: SDBus.Address) async throws -> SystemdManager {
        do {
            return SystemdManager(bus: try await SDBus.open(address))
        } catch {
            throw MusterError(
                .connectionFailed, "cannot connect to systemd over the \(address): \(error)",
                hint: "is the service manager running (and is this the right --systemd scope)?",
                cause: error as? SDBusError)
        }
    }

    // MARK: - Manager methods

    /// Reloads all unit files; returns once the manager has finished reloading.
    ///
    /// D-Bus method `org.freedesktop.systemd1.Manager.Reload`.
    func daemonReload() async throws {
        try await managerCall("Reload", unit: nil) { _ in }
    }

    /// Queues a start job for `unit`; returns the job's object path.
    ///
    /// D-Bus method `org.freedesktop.systemd1.Manager.StartUnit`.
    @discardableResult
    func start(_ unit: UnitName, mode: JobMode = .replace) async throws -> String {
        try await jobCall("StartUnit", unit, mode)
    }

    /// Queues a stop job for `unit`; returns the job's object path.
    ///
    /// D-Bus method `org.freedesktop.systemd1.Manager.StopUnit`.
    @discardableResult
    func stop(_ unit: UnitName, mode: JobMode = .replace) async throws -> String {
        try await jobCall("StopUnit", unit, mode)
    }

    /// Queues a restart job for `unit` (starting it if it is not running); returns the job's object path.
    ///
    /// D-Bus method `org.freedesktop.systemd1.Manager.RestartUnit`.
    @discardableResult
    func restart(_ unit: UnitName, mode: JobMode = .replace) async throws -> String {
        try await jobCall("RestartUnit", unit, mode)
    }

    /// Clears a unit's failed state and restart counter.
    ///
    /// D-Bus method `org.freedesktop.systemd1.Manager.ResetFailedUnit`.
    func resetFailed(_ unit: UnitName) async throws {
        try await managerCall("ResetFailedUnit", unit: unit) { m throws(SDBusError) in try m.append(unit.rawValue) }
    }

    /// Loaded units whose names match any of the shell-style `patterns` (e.g. `muster-*`), with their states.
    ///
    /// D-Bus method `org.freedesktop.systemd1.Manager.ListUnitsByPatterns`.
    func listUnits(matching patterns: [String]) async throws -> [UnitListEntry] {
        do {
            return try await bus.perform { c in
                let reply = try c.call(
                    destination: Self.destination, path: Self.managerPath, interface: Self.managerInterface,
                    member: "ListUnitsByPatterns"
                ) { m throws(SDBusError) in
                    try m.append([String]())
                    try m.append(patterns)
                }
                var out: [UnitListEntry] = []
                guard try reply.enter("a", "(ssssssouso)") else { return out }
                while try reply.enter("r", "ssssssouso") {
                    let name = try reply.readString()
                    let description = try reply.readString()
                    let load = try reply.readString()
                    let active = try reply.readString()
                    let sub = try reply.readString()
                    try reply.skip("sou")  // followed unit, object path, job id
                    try reply.skip("so")  // job type, job path
                    try reply.exit()
                    out.append(
                        UnitListEntry(
                            name: name, description: description, loadState: load, activeState: active, subState: sub))
                }
                try reply.exit()
                return out
            }
        } catch let error as SDBusError {
            throw Self.map(error, unit: nil, action: "ListUnitsByPatterns")
        }
    }

    // MARK: - State

    /// The unit's state, read over D-Bus in one visit to the connection.
    ///
    /// D-Bus method `org.freedesktop.DBus.Properties.GetAll` on the unit object, for
    /// `org.freedesktop.systemd1.Unit` and (for services and mounts) `…Service` / `…Mount`.
    func state(of unit: UnitName) async throws -> UnitState {
        let path = unit.objectPath
        let typeInterface = Self.typeInterface(of: unit)
        do {
            return try await bus.perform { c in
                var props = try Self.getAll(c, path: path, interface: Self.unitInterface)
                if let typeInterface {
                    props.merge(try Self.getAll(c, path: path, interface: typeInterface)) { a, _ in a }
                }
                return UnitState(name: unit, properties: props)
            }
        } catch let error as SDBusError {
            throw Self.map(error, unit: unit, action: "read the state of")
        }
    }

    /// The states of several units in one visit to the connection (for health reports).
    ///
    /// D-Bus method `org.freedesktop.DBus.Properties.GetAll`, as ``state(of:)``.
    func states(of units: [UnitName]) async throws -> [UnitState] {
        do {
            return try await bus.perform { c in
                try units.map { unit throws(SDBusError) in
                    var props = try Self.getAll(c, path: unit.objectPath, interface: Self.unitInterface)
                    if let typeInterface = Self.typeInterface(of: unit) {
                        props.merge(try Self.getAll(c, path: unit.objectPath, interface: typeInterface)) { a, _ in a }
                    }
                    return UnitState(name: unit, properties: props)
                }
            }
        } catch let error as SDBusError {
            throw Self.map(error, unit: nil, action: "read the state of units")
        }
    }

    static func typeInterface(of unit: UnitName) -> String? {
        switch unit.suffix {
        case "service": serviceInterface
        case "mount": mountInterface
        default: nil
        }
    }

    /// Whether a job (by the path `start`/`stop`/`restart` returned) is still queued or running.
    ///
    /// D-Bus method `org.freedesktop.DBus.Properties.Get` of `org.freedesktop.systemd1.Job.State`.
    func jobIsPending(_ jobPath: String) async throws -> Bool {
        do {
            return try await bus.perform { c in
                do {
                    _ = try c.stringProperty(
                        destination: Self.destination, path: jobPath, interface: Self.jobInterface, member: "State")
                    return true
                } catch let error as SDBusError where error.isNoSuchObject {
                    return false
                }
            }
        } catch let error as SDBusError {
            throw Self.map(error, unit: nil, action: "read job \(jobPath) of")
        }
    }

    /// Waits until `unit` settles after a start: active (and still active with the same main process after
    /// `settle`), failed, restarting after a failure, or (for a finished oneshot) inactive with its job done. Polls
    /// every `pollInterval` with `Task.sleep`.
    ///
    /// A `Type=simple` service is "active" as soon as it is forked, so one that exits at once would look healthy;
    /// `settle` is how long it must stay active (same `MainPID`, no restart) before we believe it.
    ///
    /// - Parameters:
    ///   - job: the job path returned by ``start(_:mode:)``; while it is pending an inactive unit is not settled.
    ///   - settle: how long an active unit must stay active; `.zero` returns at the first active reading.
    ///   - log: where the unit's output goes; its last `logLines` lines are attached to a failure.
    /// - Returns: the settled outcome; `.failed` carries systemd's `Result` and the log tail.
    /// - Throws: ``MusterError`` `.timeout` if it does not settle within `timeout`; D-Bus errors.
    func waitUntilSettled(
        _ unit: UnitName, job: String? = nil, timeout: Duration = .seconds(30), settle: Duration = .milliseconds(300),
        pollInterval: Duration = .milliseconds(20), log: UnitLogSource? = nil, logLines: Int = 20
    ) async throws -> UnitOutcome {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var last: UnitState?
        /// When the unit was first seen active, and as which process/restart count.
        var activeSince: (instant: ContinuousClock.Instant, pid: UInt32, restarts: UInt32)?
        while true {
            // The job first, then the state: once the job is gone the state read after it is final (a Type=simple
            // start job finishes at fork, so a state read before the job check could still say "inactive").
            let pending = if let job { try await jobIsPending(job) } else { false }
            let state = try await state(of: unit)
            last = state
            switch state.activeState {
            case "active", "reloading":
                if let result = state.result, result != "success" {
                    // Unit and service properties come from two GetAll calls: the service failed in between.
                    activeSince = nil
                    break
                }
                if let since = activeSince, since.pid == state.mainPID, since.restarts == state.nRestarts {
                    if clock.now >= since.instant.advanced(by: settle) { return .active(state) }
                } else {
                    activeSince = (clock.now, state.mainPID, state.nRestarts)
                    if settle == .zero { return .active(state) }
                }
            case "failed":
                return .failed(state, logTail: await logTail(unit, log, logLines))
            case "activating" where state.subState == "auto-restart" && state.result != "success":
                // Exited and waits to be restarted: report the failure now rather than after the start limit.
                return .failed(state, logTail: await logTail(unit, log, logLines))
            case "inactive":
                if !pending && state.loadState != "loaded" {
                    throw MusterError(
                        .unitNotFound, "unit \(unit) is not loaded (LoadState=\(state.loadState))",
                        hint: "was the unit file written and daemon-reload run?")
                }
                if !pending && job != nil {
                    if let result = state.result, result != "success" {
                        return .failed(state, logTail: await logTail(unit, log, logLines))
                    }
                    return .inactive(state)
                }
            default:
                activeSince = nil
            }
            guard clock.now < deadline else {
                throw MusterError(
                    .timeout,
                    "unit \(unit) did not become active within \(timeout) "
                        + "(ActiveState=\(last?.activeState ?? "?"), SubState=\(last?.subState ?? "?"))")
            }
            try await Task.sleep(for: pollInterval)
        }
    }

    // MARK: - Internals

    private func logTail(_ unit: UnitName, _ source: UnitLogSource?, _ lines: Int) async -> [String] {
        guard let source else { return [] }
        return await UnitLog.tail(of: unit, from: source, lines: lines)
    }

    private func jobCall(_ member: String, _ unit: UnitName, _ mode: JobMode) async throws -> String {
        do {
            return try await bus.perform { c in
                let reply = try c.call(
                    destination: Self.destination, path: Self.managerPath, interface: Self.managerInterface,
                    member: member
                ) { m throws(SDBusError) in
                    try m.append(unit.rawValue)
                    try m.append(mode.rawValue)
                }
                return try reply.readString(type: "o")
            }
        } catch let error as SDBusError {
            throw Self.map(error, unit: unit, action: member)
        }
    }

    private func managerCall(
        _ member: String, unit: UnitName?, append: @escaping @Sendable (SDBusMessage) throws(SDBusError) -> Void
    ) async throws {
        do {
            try await bus.perform { c in
                _ = try c.call(
                    destination: Self.destination, path: Self.managerPath, interface: Self.managerInterface,
                    member: member, append: append)
            }
        } catch let error as SDBusError {
            throw Self.map(error, unit: unit, action: member)
        }
    }

    private static func getAll(_ c: SDBus.Connection, path: String, interface: String) throws(SDBusError)
        -> [String: SDBusValue]
    {
        let reply = try c.call(
            destination: destination, path: path, interface: propertiesInterface, member: "GetAll"
        ) { m throws(SDBusError) in try m.append(interface) }
        return try reply.readPropertyDictionary()
    }

    /// D-Bus errors → operator errors naming the unit.
    static func map(_ error: SDBusError, unit: UnitName?, action: String) -> MusterError {
        let subject = unit.map { " \($0)" } ?? ""
        if error.name == SDBusError.Name.noSuchUnit {
            return MusterError(.unitNotFound, "systemd has no unit\(subject): \(error.message)", cause: error)
        }
        if error.name == nil && (error.errno == 104 || error.errno == 107 || error.errno == 111) {
            // ECONNRESET, ENOTCONN, ECONNREFUSED: the manager went away.
            return MusterError(.connectionFailed, "lost the connection to systemd (\(action)\(subject))", cause: error)
        }
        return MusterError(.internal, "systemd refused \(action)\(subject): \(error)", cause: error)
    }
}

/// One row of `ListUnitsByPatterns`.
struct UnitListEntry: Sendable, Equatable {
    var name: String
    var description: String
    var loadState: String
    var activeState: String
    var subState: String
}

/// What health reports and task results need of a unit, read over D-Bus.
struct UnitState: Sendable, Equatable {
    var name: UnitName
    /// `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`.
    var activeState: String
    var subState: String
    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`.
    var loadState: String
    var fragmentPath: String
    /// The service's (or mount's) `Result`: `success`, `exit-code`, `signal`, `timeout`, `watchdog`, … (`nil` for
    /// other unit types).
    var result: String?
    var nRestarts: UInt32
    var mainPID: UInt32
    /// `ExecMainStatus`: the exit status (or signal number) of the main process.
    var execMainStatus: Int32?

    init(name: UnitName, properties p: [String: SDBusValue]) {
        self.name = name
        activeState = p["ActiveState"]?.stringValue ?? ""
        subState = p["SubState"]?.stringValue ?? ""
        loadState = p["LoadState"]?.stringValue ?? ""
        fragmentPath = p["FragmentPath"]?.stringValue ?? ""
        result = p["Result"]?.stringValue
        nRestarts = p["NRestarts"]?.integerValue.flatMap { UInt32(exactly: $0) } ?? 0
        mainPID = p["MainPID"]?.integerValue.flatMap { UInt32(exactly: $0) } ?? 0
        execMainStatus = p["ExecMainStatus"]?.integerValue.flatMap { Int32(exactly: $0) }
    }
}

/// How a started unit settled.
enum UnitOutcome: Sendable, Equatable {
    case active(UnitState)
    /// Finished without error (a oneshot without `RemainAfterExit=`).
    case inactive(UnitState)
    /// Failed (or restarting after a failure): systemd's `Result` is in the state; the log tail if known.
    case failed(UnitState, logTail: [String])

    var state: UnitState {
        switch self {
        case .active(let s), .inactive(let s), .failed(let s, _): s
        }
    }

    /// For task results: "failed: Result=exit-code, status 3" and the last log lines.
    var failureMessage: String? {
        guard case .failed(let s, let tail) = self else { return nil }
        var text = "unit \(s.name) failed: Result=\(s.result ?? "?")"
        if let status = s.execMainStatus { text += ", exit status \(status)" }
        if !tail.isEmpty { text += "\nlast log lines:\n" + tail.joined(separator: "\n") }
        return text
    }
}
