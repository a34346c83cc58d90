import Foundation
import Logging
import Shared

#if canImport(CoreFoundation)
    // With MemberImportVisibility, members of glibc structs (stat, dirent, sockaddr, passwd, statvfs) may resolve to
    // CoreFoundation's copy of the headers depending on build order, so that module is imported explicitly.
    import CoreFoundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// Mounts and unmounts volumes as systemd `.mount` units the agent writes (DESIGN §6), and reports on them.
///
/// Only units carrying the `volume/NAME` owner marker are ever written, stopped or removed; any other file at a
/// unit's path, or a foreign mount at the mount path, is refused with `.conflict`.
struct VolumeManager: Sendable {
    struct Configuration: Sendable {
        /// Where volume units are written (`/etc/systemd/system` for the system manager).
        var unitDirectory: String = "/etc/systemd/system"
        /// How to reach the service manager.
        var connect: @Sendable () async throws -> SystemdManager = {
            try await SystemdManager.connect(SystemdManager.Scope.system)
        }
        var probe = VolumeProbe()
        /// Where a failed mount's log lines come from.
        var log: UnitLogSource = .journal(directory: nil)
        /// How long a mount or unmount may take.
        var timeout: Duration = .seconds(90)
    }

    let configuration: Configuration
    let logger: Logger

    private var writer: UnitWriter { UnitWriter(directory: configuration.unitDirectory) }

    // MARK: - Mount

    /// Writes the unit, starts it, then checks mounted / writable / free space. Idempotent: an attached volume with
    /// the same spec is left as it is (a changed spec rewrites the unit and remounts).
    ///
    /// On a failed start nothing is left behind: the unit is stopped, its file removed, its failed state reset.
    /// - Returns: the volume's status.
    /// - Throws: ``TaskFailure`` with the mount error and the unit's last log lines.
    func mount(_ spec: VolumeSpec) async throws -> VolumeStatus {
        let (name, file) = try MountUnit.make(spec)
        try writer.preflight(file, as: name)
        let local = configuration.probe.rootPrefix + MountTable.normalize(spec.mountPath)
        let table = try mountTable()
        let ownUnit = try writer.owner(of: name) == file.owner
        if table.mount(at: spec.mountPath) != nil, !ownUnit {
            throw MusterError(
                .conflict, "something is already mounted at \(spec.mountPath) and it is not this volume's unit",
                hint: "choose another --mount-path, or unmount what is there")
        }
        if !ownUnit || table.mount(at: spec.mountPath) == nil { try Self.checkMountPoint(local, shown: spec.mountPath) }
        if spec.type == .bind {
            let source = configuration.probe.rootPrefix + spec.source
            guard FileStatus.lstat(source)?.kind == .directory else {
                throw MusterError(
                    .invalidInput, "the bind source '\(spec.source)' is not a directory on this node",
                    hint: "create it first, or give an existing directory to --bind")
            }
        }
        let systemd = try await configuration.connect()
        let outcome = try writer.write(file, as: name)
        try await systemd.daemonReload()
        let job: String
        switch outcome {
        case .unchanged: job = try await systemd.start(name)
        case .created: job = try await systemd.start(name)
        case .updated: job = try await systemd.restart(name)
        }
        let settled: UnitOutcome
        do {
            settled = try await systemd.waitUntilSettled(
                name, job: job, timeout: configuration.timeout, settle: .zero, log: configuration.log)
        } catch {
            await rollBack(name, systemd: systemd)
            throw error
        }
        guard case .active(let state) = settled else {
            let tail = settled.state.result.map { "Result=\($0)" } ?? ""
            var lines: [String] = []
            if case .failed(_, let logTail) = settled { lines = logTail }
            await rollBack(name, systemd: systemd)
            let leftover = (try? mountTable().mount(at: spec.mountPath)) != nil
            throw TaskFailure(
                code: .io,
                message: "mounting volume \(spec.name) at \(spec.mountPath) failed (unit \(name) "
                    + "\(settled.state.activeState) \(tail))"
                    + (lines.isEmpty ? "" : ": " + lines.suffix(3).joined(separator: " | "))
                    + (leftover ? "; a mount is still present at the path" : "; nothing was left mounted"),
                details: .object([
                    "unit": .string(name.rawValue), "activeState": .string(settled.state.activeState),
                    "result": .string(settled.state.result ?? ""), "log": .array(lines.map { .string($0) }),
                    "leftoverMount": .bool(leftover),
                ]))
        }
        let status = await configuration.probe.status(
            name: spec.name, mountPath: MountTable.normalize(spec.mountPath), type: spec.type,
            what: MountUnit.what(for: spec), unitState: state.activeState)
        let readOnly = spec.options.contains("ro")
        guard status.mounted, status.writable || readOnly else {
            throw TaskFailure(
                code: .verificationFailed,
                message: "volume \(spec.name): unit \(name) is active but \(status.problem ?? "the checks failed")",
                details: try JSONValue(encoding: status))
        }
        logger.info("volume mounted", metadata: ["volume": "\(spec.name)", "unit": "\(name)"])
        return status
    }

    /// After a failed start: stop, remove the file, reload, reset the failed state (errors logged, not thrown).
    private func rollBack(_ name: UnitName, systemd: SystemdManager) async {
        do {
            let job = try await systemd.stop(name)
            _ = try? await systemd.waitUntilSettled(name, job: job, timeout: configuration.timeout, settle: .zero)
        } catch {
            logger.debug("stop after a failed mount", metadata: ["unit": "\(name)", "error": "\(error)"])
        }
        do {
            try writer.remove(name)
            try await systemd.daemonReload()
            try await systemd.resetFailed(name)
        } catch {
            logger.debug("cleanup after a failed mount", metadata: ["unit": "\(name)", "error": "\(error)"])
        }
    }

    /// The mount point must be absent (systemd creates it) or an empty directory.
    static func checkMountPoint(_ local: String, shown: String) throws {
        guard let status = FileStatus.lstat(local) else { return }
        guard status.kind == .directory else {
            throw MusterError(
                .invalidInput, "the mount path \(shown) exists and is not a directory",
                hint: "choose another --mount-path")
        }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: local) else {
            throw MusterError(.io, "cannot read the mount path \(shown)")
        }
        guard entries.isEmpty else {
            throw MusterError(
                .invalidInput,
                "the mount path \(shown) is a non-empty directory (\(entries.count) entries); mounting over it "
                    + "would hide them", hint: "choose an empty or new directory as --mount-path")
        }
    }

    // MARK: - Unmount

    /// Stops and removes the volume's unit. No unit (never attached, or detached already) is a no-op.
    /// - Returns: `true` if a unit was removed.
    /// - Throws: `.conflict` when the unit at that path is not this volume's; the unmount error.
    func unmount(_ spec: UnmountVolumeSpec) async throws -> Bool {
        try VolumeSpec.checkPath(spec.mountPath, what: "mount path")
        let name = try UnitName.mount(where: spec.mountPath)
        guard let owner = try writer.owner(of: name) else { return false }
        guard owner == MountUnit.owner(volume: spec.name) else {
            throw MusterError(
                .conflict,
                "\(writer.path(of: name)) "
                    + (owner.isEmpty ? "was not written by Muster" : "belongs to \(owner), not volume \(spec.name)")
                    + "; refusing to stop or remove it")
        }
        let systemd = try await configuration.connect()
        let job = try await systemd.stop(name)
        let outcome = try await systemd.waitUntilSettled(
            name, job: job, timeout: configuration.timeout, settle: .zero, log: configuration.log)
        if case .failed(let state, let lines) = outcome {
            throw TaskFailure(
                code: .io,
                message: "unmounting volume \(spec.name) failed (unit \(name) \(state.activeState))"
                    + (lines.isEmpty ? "" : ": " + lines.suffix(3).joined(separator: " | ")),
                details: .object(["unit": .string(name.rawValue), "log": .array(lines.map { .string($0) })]))
        }
        if try mountTable().mount(at: spec.mountPath) != nil {
            throw TaskFailure(
                code: .io, message: "unit \(name) stopped but \(spec.mountPath) is still in the mount table",
                details: .object(["unit": .string(name.rawValue)]))
        }
        try writer.remove(name, owner: owner)
        try await systemd.daemonReload()
        try? await systemd.resetFailed(name)
        logger.info("volume unmounted", metadata: ["volume": "\(spec.name)", "unit": "\(name)"])
        return true
    }

    // MARK: - Health

    /// The status of every volume unit in the unit directory, probed concurrently.
    func statuses() async -> [VolumeStatus] {
        guard let names = try? writer.units(ownedBy: { MountUnit.volumeName(owner: $0) != nil }), !names.isEmpty
        else { return [] }
        let systemd = try? await configuration.connect()
        var volumes: [(String, UnitName, (what: String, where: String, type: String))] = []
        for name in names {
            guard let text = try? String(contentsOfFile: writer.path(of: name), encoding: .utf8),
                let owner = UnitFile.owner(inContents: text), let volume = MountUnit.volumeName(owner: owner),
                let mount = MountUnit.parse(text)
            else { continue }
            volumes.append((volume, name, mount))
        }
        var states: [UnitName: String] = [:]
        if let systemd {
            for (_, name, _) in volumes {
                states[name] = try? await systemd.state(of: name).activeState
            }
        }
        let probe = configuration.probe
        return await withTaskGroup(of: VolumeStatus.self) { group in
            for (volume, name, mount) in volumes {
                let state = states[name]
                group.addTask {
                    await probe.status(
                        name: volume, mountPath: mount.where, type: VolumeType(fileSystemType: mount.type),
                        what: mount.what, unitState: state)
                }
            }
            var out: [VolumeStatus] = []
            for await status in group { out.append(status) }
            return out.sorted { $0.name < $1.name }
        }
    }

    private func mountTable() throws -> MountTable {
        do {
            return try MountTable.read(path: configuration.probe.mountInfoPath)
        } catch {
            throw MusterError(.io, "cannot read the mount table \(configuration.probe.mountInfoPath): \(error)")
        }
    }
}

extension VolumeType {
    /// From a unit's `Type=`.
    init(fileSystemType: String) {
        switch fileSystemType {
        case "nfs": self = .nfs
        case "nfs4": self = .nfs4
        default: self = .bind
        }
    }
}
