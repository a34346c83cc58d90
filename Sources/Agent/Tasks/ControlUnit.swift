import Shared

/// `controlUnit`: starts, stops or restarts a systemd unit on the node through D-Bus (no `systemctl`), or reads its
/// state, and waits until the unit has settled — the seed workflow's "stop the service" and "start it in cluster
/// mode" steps.
///
/// Spec: `{"unit": "app.service", "action": "start|stop|restart|status", "timeoutSeconds": 90}`. Result: the unit's
/// `activeState`, `subState`, `result`, `mainPID`, `nRestarts`. A start or restart whose unit fails (or exits at once)
/// fails the task with `UNIT_FAILED`, systemd's `Result`, the exit status and the unit's last journal lines; a unit
/// that does not exist fails with `UNIT_NOT_FOUND`. Starting an active unit or stopping an inactive one succeeds
/// without changing anything, so the task can run twice.
struct ControlUnit: TaskHandler {
    enum Action: String, Codable, Sendable {
        case start, stop, restart, status
    }

    struct Spec: Codable, Sendable, Equatable {
        var unit: String
        var action: Action
        var timeoutSeconds: Int?
    }

    /// Connects to the manager the agent drives (`--systemd`).
    let connect: @Sendable () async throws -> SystemdManager
    /// Where failing units' last lines come from (the node's journal).
    let log: UnitLogSource?

    func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let spec = try spec.decode(Spec.self)
        let unit = try UnitName(spec.unit)
        let timeout = Duration.seconds(max(1, min(spec.timeoutSeconds ?? 90, 3600)))
        let manager = try await connect()
        let state: UnitState
        switch spec.action {
        case .status:
            state = try await manager.state(of: unit)
            if state.loadState == "not-found" {
                throw MusterError(.unitNotFound, "unit \(unit) does not exist on this node")
            }
        case .start, .restart:
            let job = spec.action == .start ? try await manager.start(unit) : try await manager.restart(unit)
            let outcome = try await manager.waitUntilSettled(unit, job: job, timeout: timeout, log: log)
            if let failure = outcome.failureMessage {
                throw TaskFailure(code: .unitFailed, message: failure, details: Self.json(outcome.state))
            }
            state = outcome.state
        case .stop:
            let job = try await manager.stop(unit)
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: timeout)
            while true {
                let current = try await manager.state(of: unit)
                if !(try await manager.jobIsPending(job)),
                    current.activeState == "inactive" || current.activeState == "failed"
                {
                    state = current
                    break
                }
                guard clock.now < deadline else {
                    throw MusterError(
                        .timeout,
                        "unit \(unit) did not stop within \(timeout) (ActiveState=\(current.activeState), "
                            + "SubState=\(current.subState))")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        await progress(.object(["unit": .string(unit.rawValue), "activeState": .string(state.activeState)]))
        return Self.json(state)
    }

    static func json(_ state: UnitState) -> JSONValue {
        .object([
            "unit": .string(state.name.rawValue), "activeState": .string(state.activeState),
            "subState": .string(state.subState), "loadState": .string(state.loadState),
            "result": state.result.map(JSONValue.string) ?? .null, "mainPID": .number(Double(state.mainPID)),
            "nRestarts": .number(Double(state.nRestarts)),
        ])
    }
}
