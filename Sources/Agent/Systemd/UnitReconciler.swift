import Shared

/// Brings one module's units on a node to a desired set: the unit side of attach, reattach and detach.
///
/// Ownership comes from the `X-Muster-Owner=<module>/<service>` marker, so only our units of this module are ever
/// stopped or removed. New units are started, changed ones restarted, unchanged ones left running (unless the
/// caller says their files changed), units of the module no longer wanted are stopped and removed, and the manager
/// is reloaded once.
struct UnitReconciler: Sendable {
    let systemd: SystemdManager
    let writer: UnitWriter

    /// What happened to one unit.
    enum Action: String, Sendable, Equatable {
        case started, restarted, unchanged, removed
    }

    struct Result: Sendable {
        var actions: [UnitName: Action] = [:]
        /// Settled outcomes of the units started or restarted.
        var outcomes: [UnitName: UnitOutcome] = [:]
        var failures: [UnitOutcome] { outcomes.values.filter { if case .failed = $0 { true } else { false } } }
    }

    /// The owner marker of `service` in `module`.
    static func owner(module: String, service: String) -> String { "\(module)/\(service)" }

    /// Our units of `module` in the unit directory.
    func units(of module: String) throws -> [UnitName] {
        try writer.units(ownedBy: { $0.hasPrefix("\(module)/") })
    }

    /// Writes `desired` (all owned by `module`), removes the module's other units, reloads, starts/restarts and waits.
    ///
    /// - Parameters:
    ///   - restart: unchanged units to restart anyway (their files changed in a new module version).
    ///   - log: where each unit's output goes, for failure reports.
    /// - Throws: `.invalidInput` (a value that cannot be written, field named), `.conflict` (a unit that is not
    ///   ours, or another module's), D-Bus errors, `.timeout`.
    func apply(
        module: String, desired: [(UnitName, UnitFile)], restart: Set<UnitName> = [],
        log: @Sendable (UnitName) -> UnitLogSource? = { _ in nil }, settle: Duration = .milliseconds(300)
    ) async throws -> Result {
        for (name, file) in desired where !file.owner.hasPrefix("\(module)/") {
            throw MusterError(.internal, "unit \(name) is owned by \(file.owner), not by module \(module)")
        }
        var result = Result()
        let existing = Set(try units(of: module))
        let wanted = Set(desired.map(\.0))
        var writes: [UnitName: UnitWriter.Outcome] = [:]
        // Check every unit before writing any, so a refusal (conflict, bad value) changes nothing on disk or in
        // the manager.
        for (name, file) in desired { try writer.preflight(file, as: name) }
        for (name, file) in desired { writes[name] = try writer.write(file, as: name) }
        let removed = existing.subtracting(wanted).sorted()
        for name in removed {
            try await stopIfLoaded(name)
            try writer.remove(name)
            result.actions[name] = .removed
        }
        let changed = writes.values.contains { $0 != .unchanged } || !removed.isEmpty
        if changed { try await systemd.daemonReload() }

        var jobs: [(UnitName, String)] = []
        for (name, _) in desired {
            switch writes[name] ?? .unchanged {
            case .created:
                jobs.append((name, try await systemd.start(name)))
                result.actions[name] = .started
            case .updated:
                jobs.append((name, try await systemd.restart(name)))
                result.actions[name] = .restarted
            case .unchanged where restart.contains(name):
                jobs.append((name, try await systemd.restart(name)))
                result.actions[name] = .restarted
            case .unchanged:
                let state = try await systemd.state(of: name)
                if state.activeState == "active" || state.activeState == "activating" {
                    result.actions[name] = .unchanged
                } else {
                    jobs.append((name, try await systemd.start(name)))
                    result.actions[name] = .started
                }
            }
        }
        // Wait for all of them at once: each must stay active for `settle`, and waiting one after the other would
        // add those up.
        let waits = jobs.map { (name: $0.0, job: $0.1, log: log($0.0)) }
        try await withThrowingTaskGroup(of: (UnitName, UnitOutcome).self) { group in
            for wait in waits {
                group.addTask { [systemd] in
                    (
                        wait.name,
                        try await systemd.waitUntilSettled(wait.name, job: wait.job, settle: settle, log: wait.log)
                    )
                }
            }
            for try await (name, outcome) in group { result.outcomes[name] = outcome }
        }
        return result
    }

    /// Stops and removes every unit of `module`; a module with no units is a no-op.
    /// - Returns: the units removed.
    @discardableResult
    func detach(module: String) async throws -> [UnitName] {
        let ours = try units(of: module)
        guard !ours.isEmpty else { return [] }
        for name in ours {
            try await stopIfLoaded(name)
            try writer.remove(name)
        }
        try await systemd.daemonReload()
        return ours
    }

    /// Stops `name` and waits until it is no longer active (a unit that is not loaded needs no stop).
    private func stopIfLoaded(_ name: UnitName) async throws {
        let state = try await systemd.state(of: name)
        guard state.loadState == "loaded", state.activeState != "inactive" else { return }
        if state.activeState != "failed" { try await systemd.stop(name) }
        for _ in 0..<1500 {
            let now = try await systemd.state(of: name)
            if now.activeState == "inactive" || now.activeState == "failed" { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw MusterError(.timeout, "unit \(name) did not stop")
    }
}
