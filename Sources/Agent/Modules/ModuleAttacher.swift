import Crypto
import Foundation
import Logging
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Attaches, reattaches and detaches module versions on a node (issue 3 item 5, DESIGN §5): verifies a stored
/// version, mounts it (EROFS metadata image + overlay with the object store as data-only lower layer: as systemd
/// `.mount` units of a system manager, so the mounts live in the manager's mount namespace, or — a user manager
/// cannot mount — by the agent itself, ``MountMethod``), writes one service unit per manifest service,
/// daemon-reloads and starts them over D-Bus and waits until each is active or failed.
///
/// **Paths.** Version `D` of module `m` is mounted at `<store>/mnt/m-<D[0..<16]>/meta` (the EROFS image) and
/// `…/root` (the module tree). `<store>/current/m` is a symlink to the attached version's `root`; units name files
/// through it (`ExecStart=<store>/current/m/bin/api`, `WorkingDirectory=`, `MUSTER_MODULE_ROOT=`), so a new
/// version does not change a unit's text and only services whose files changed are restarted
/// (``ModuleFileIndex`` decides which). Services left running keep using the old tree: its mount units have
/// `LazyUnmount=yes`, so unmounting the old version after a reattach detaches it from the file system while they
/// still hold it.
///
/// **State.** `<store>/attached/<module>.json` records the attached version, its units and each service's file
/// fingerprint (written atomically), so a restarted agent knows what is attached; mount units carry the owner
/// marker `<module>.image/<D[0..<16]>` (module names have no `.`, so they never collide with service owners
/// `<module>/<service>`).
///
/// One operation runs at a time.
final class ModuleAttacher: Sendable {
    /// Where services' stdout/stderr go.
    enum ServiceOutput: Sendable, Equatable {
        /// The journal; failure reports read it from `directory` (`nil`: the local journal).
        case journal(directory: String?)
        /// `StandardOutput=append:<directory>/<unit>.log` (nodes or tests without journald).
        case files(directory: String)
    }

    /// Who makes the mounts.
    enum MountMethod: Sendable, Equatable {
        /// `.mount` units of the manager (a system manager).
        case units
        /// The agent itself (``DirectMounter``), in its own mount namespace (`nil`) or that of a process: for a
        /// user manager, which cannot mount.
        case direct(namespacePID: pid_t?)
    }

    struct Configuration: Sendable {
        /// Unit name prefix: `<prefix>-<module>-<service>.service`.
        var prefix: String = UnitName.defaultPrefix
        var scope: SystemdManager.Scope = .system
        /// A path prefix under which the agent sees the manager's mount namespace: `""` when they share it (the
        /// agent is a service of that manager); tests that drive a node from outside use `/proc/<node PID 1>/root`.
        var managerRoot: String = ""
        var mounts: MountMethod = .units
        var output: ServiceOutput = .journal(directory: nil)
        /// How long a started service must stay active with the same main process to count as started.
        var settle: Duration = .milliseconds(300)
        var startTimeout: Duration = .seconds(60)

        init() {}
    }

    /// What happened to one unit.
    struct UnitReport: Sendable, Equatable, Codable {
        var name: String
        /// `started`, `restarted`, `unchanged`, `removed`.
        var action: String
        var activeState: String
        var subState: String
        var mainPID: UInt32
        var nRestarts: UInt32
    }

    struct AttachReport: Sendable, Equatable, Codable {
        enum Outcome: String, Sendable, Codable {
            /// The module was not attached.
            case attached
            /// Another version was attached and has been replaced.
            case reattached
            /// This version was already attached: nothing changed (stopped units were started again).
            case unchanged
        }
        var module: String
        var version: String
        var imageDigest: String
        var previousImageDigest: String?
        var outcome: Outcome
        var units: [UnitReport]
        /// Files hashed by verification (the rest were verified before and have not changed since).
        var hashedFiles: Int
    }

    struct DetachReport: Sendable, Equatable, Codable {
        var module: String
        /// `false`: nothing of the module was on the node (a no-op).
        var wasAttached: Bool
        var removedUnits: [String]
        var unmounted: [String]
        var collectedImages: [String]
        var collectedObjects: Int
    }

    /// What `<store>/attached/<module>.json` holds.
    struct AttachedModule: Sendable, Equatable, Codable {
        struct Service: Sendable, Equatable, Codable {
            var unit: String
            var fingerprint: String
        }
        var module: String
        var version: String
        var imageDigest: String
        /// Service name → its unit and file fingerprint.
        var services: [String: Service]
        var attachedAt: Date
    }

    let store: NodeModuleStore
    let manager: SystemdManager
    let writer: UnitWriter
    let configuration: Configuration
    let verifier: ModuleVerifier
    let logger: Logger
    private let gate = AsyncGate()

    init(
        store: NodeModuleStore, manager: SystemdManager, unitDirectory: String, prefix: String = UnitName.defaultPrefix,
        trustedKeys: [Curve25519.Signing.PublicKey], configuration: Configuration = Configuration(), logger: Logger
    ) {
        var configuration = configuration
        configuration.prefix = prefix
        self.store = store
        self.manager = manager
        self.writer = UnitWriter(directory: unitDirectory)
        self.configuration = configuration
        self.verifier = ModuleVerifier(store: store, trustedKeys: trustedKeys)
        self.logger = logger
    }

    private var reconciler: UnitReconciler { UnitReconciler(systemd: manager, writer: writer) }

    // MARK: - Attach

    /// Attaches the stored module version `imageDigest`; see the type's documentation.
    ///
    /// Idempotent: the attached version again is a no-op success (units that stopped are started). Another version
    /// of an attached module is a reattach: only services whose unit or files changed restart, then the old version
    /// is unmounted.
    ///
    /// - Throws: `MusterError` `.notFound` (not stored, objects missing), `.verificationFailed`,
    ///   `.digestMismatch` (a changed object: refused before anything is mounted), `.invalidInput` (a value that
    ///   cannot be written into a unit, field named), `.conflict` (a unit file that is not ours exists),
    ///   `.unitFailed` (a mount or service failed: systemd's Result and the last log lines), `.timeout`, D-Bus
    ///   errors.
    func attach(imageDigest: String) async throws -> AttachReport {
        try await gate.run { try await self.attachLocked(imageDigest: imageDigest) }
    }

    private func attachLocked(imageDigest: String) async throws -> AttachReport {
        try store.prepare()
        let verified = try verifier.verify(imageDigest: imageDigest)
        let manifest = verified.payload.manifest
        let module = manifest.name
        var log = logger
        log[metadataKey: "module"] = "\(module)@\(manifest.version)"
        log.debug("verified", metadata: ["hashed": "\(verified.hashed)", "cached": "\(verified.cached)"])
        let previous = try loadRecord(module: module)

        // Every service unit is rendered and checked against the unit directory before anything is mounted.
        let desired = try serviceUnits(for: manifest)
        for (name, file) in desired { try writer.preflight(file, as: name) }

        let mounts = try await mountVersion(module: module, imageDigest: imageDigest)
        let index = try ModuleFileIndex.read(metaRoot: configuration.managerRoot + mounts.metaWhere)
        try switchCurrent(module: module, to: mounts.rootWhere)

        var services: [String: AttachedModule.Service] = [:]
        var restart = Set<UnitName>()
        for (service, (name, _)) in zip(manifest.services, desired) {
            let fingerprint = index.fingerprint(of: service, in: manifest)
            services[service.name] = .init(unit: name.rawValue, fingerprint: fingerprint)
            if let old = previous?.services[service.name], old.fingerprint != fingerprint,
                previous?.imageDigest != imageDigest
            {
                restart.insert(name)
            }
        }
        let record = AttachedModule(
            module: module, version: manifest.version, imageDigest: imageDigest, services: services,
            attachedAt: Date())
        // Recorded before the units start: a failed start leaves the module attached (failed), and detach cleans up.
        try saveRecord(record)

        let result = try await reconciler.apply(
            module: module, desired: desired, restart: restart,
            log: { [configuration] name in
                Self.logSource(configuration.output, unit: name)
            }, settle: configuration.settle)
        let failures = result.failures.compactMap(\.failureMessage).sorted()
        if !failures.isEmpty {
            throw MusterError(
                .unitFailed,
                "module \(module)@\(manifest.version): \(failures.count) unit(s) failed\n"
                    + failures.joined(separator: "\n"),
                hint: "fix the module and attach a new version, or detach it")
        }
        // The new version runs: unmount every other version of this module (lazily: services left running
        // unchanged may still use the old tree).
        try await removeStaleMounts(module: module, keeping: mounts)

        let names = desired.map(\.0)
        let states = try await manager.states(of: names + result.actions.keys.filter { !names.contains($0) })
        let units = states.map { state in
            UnitReport(
                name: state.name.rawValue, action: (result.actions[state.name] ?? .unchanged).rawValue,
                activeState: state.activeState, subState: state.subState, mainPID: state.mainPID,
                nRestarts: state.nRestarts)
        }.sorted { $0.name < $1.name }
        let outcome: AttachReport.Outcome =
            previous == nil ? .attached : previous?.imageDigest == imageDigest ? .unchanged : .reattached
        log.info(
            "module attached",
            metadata: ["outcome": "\(outcome.rawValue)", "restarted": "\(restart.map(\.rawValue).sorted())"])
        return AttachReport(
            module: module, version: manifest.version, imageDigest: imageDigest,
            previousImageDigest: previous.flatMap { $0.imageDigest == imageDigest ? nil : $0.imageDigest },
            outcome: outcome, units: units, hashedFiles: verified.hashed)
    }

    // MARK: - Detach

    /// Stops and removes the module's units (only ours), unmounts every version of it, forgets it and collects
    /// the objects, images and descriptors no attached module references. A module that is not attached is a
    /// no-op success.
    ///
    /// - Throws: `MusterError` `.invalidInput` (not a module name), `.conflict`, `.timeout`, `.io`, D-Bus errors.
    func detach(module: String) async throws -> DetachReport {
        try await gate.run { try await self.detachLocked(module: module) }
    }

    private func detachLocked(module: String) async throws -> DetachReport {
        try UnitName.validateComponent(module, field: "module name")
        let record = try loadRecord(module: module)
        let removed = try await reconciler.detach(module: module)
        let unmounted = try await removeStaleMounts(module: module, keeping: nil)
        let link = "\(store.currentDirectory)/\(module)"
        if FileStatus.lstat(link) != nil, unlink(link) != 0 { throw NodeModuleStore.ioError("unlink", link) }
        if record != nil {
            let path = recordPath(module: module)
            if unlink(path) != 0 && errno != ENOENT { throw NodeModuleStore.ioError("unlink", path) }
        }
        let wasAttached = record != nil || !removed.isEmpty || !unmounted.isEmpty
        var collected = NodeModuleStore.CollectionReport()
        if wasAttached {
            collected = try store.garbageCollect(keeping: Set(try attachedModules().map(\.imageDigest)))
            logger.info(
                "module detached",
                metadata: [
                    "module": "\(module)", "units": "\(removed.map(\.rawValue))",
                    "collectedObjects": "\(collected.objects)",
                ])
        }
        return DetachReport(
            module: module, wasAttached: wasAttached, removedUnits: removed.map(\.rawValue),
            unmounted: unmounted, collectedImages: collected.images,
            collectedObjects: collected.objects)
    }

    // MARK: - Restore

    /// Attaches every recorded module again (its recorded version): after an agent restart or a reboot, mounts
    /// and units that are gone come back; what is still there is left alone (attach is idempotent). Unit files are
    /// not enabled (no `[Install]`), so this is how modules come back after a reboot.
    ///
    /// - Returns: each recorded module's attach result, in name order; one failure does not stop the others.
    func restoreAttached() async -> [(module: String, result: Result<AttachReport, any Error>)] {
        let records: [AttachedModule]
        do {
            records = try attachedModules()
        } catch {
            logger.error("cannot read the attached modules: \(error)")
            return []
        }
        var out: [(module: String, result: Result<AttachReport, any Error>)] = []
        for record in records {
            do {
                out.append((record.module, .success(try await attach(imageDigest: record.imageDigest))))
            } catch {
                logger.error(
                    "cannot restore module", metadata: ["module": "\(record.module)", "error": "\(error)"])
                out.append((record.module, .failure(error)))
            }
        }
        return out
    }

    // MARK: - Status

    /// The modules recorded as attached.
    func attachedModules() throws -> [AttachedModule] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: store.attachedDirectory)) ?? []
        return try names.sorted().compactMap { name in
            guard name.hasSuffix(".json"), !name.hasPrefix(".") else { return nil }
            return try loadRecord(module: String(name.dropLast(5)))
        }
    }

    /// Every attached service unit with ActiveState, SubState, NRestarts, MainPID and Result read over D-Bus, for
    /// the health report. Units that cannot be read are left out (the report still goes out).
    func attachedUnits() async -> [UnitStatus] {
        guard let modules = try? attachedModules() else { return [] }
        var out: [UnitStatus] = []
        for module in modules {
            let names = module.services.values.compactMap { try? UnitName($0.unit) }.sorted()
            guard let states = try? await manager.states(of: names) else { continue }
            out += states.map {
                UnitStatus(
                    name: $0.name.rawValue, module: module.module, activeState: $0.activeState,
                    subState: $0.subState, nRestarts: $0.nRestarts, mainPID: $0.mainPID, result: $0.result)
            }
        }
        return out
    }

    // MARK: - Units

    /// Where the attached version of `module` is seen by services.
    func currentRoot(module: String) -> String { "\(store.currentDirectory)/\(module)" }

    /// One unit per service, in manifest order.
    func serviceUnits(for manifest: ModuleManifest) throws -> [(UnitName, UnitFile)] {
        let root = currentRoot(module: manifest.name)
        let sandbox: SandboxProfile =
            switch manifest.sandbox {
            case .default: .default
            case .strict: .strict
            case .trusted: .trusted
            }
        var names: [String: UnitName] = [:]
        for service in manifest.services {
            names[service.name] = try UnitName.service(
                prefix: configuration.prefix, module: manifest.name, service: service.name)
        }
        return try manifest.services.map { service in
            guard let name = names[service.name], let executable = service.exec.first else {
                throw MusterError(.invalidInput, "service \(service.name) of \(manifest.name) has no exec")
            }
            var environment = [
                UnitFile.EnvironmentVariable("MUSTER_MODULE", manifest.name),
                UnitFile.EnvironmentVariable("MUSTER_MODULE_ROOT", root),
            ]
            for key in service.environment.keys.sorted() {
                environment.append(.init(key, service.environment[key] ?? ""))
            }
            let output: UnitFile.Output? =
                switch configuration.output {
                case .journal: nil
                case .files(let directory): .append("\(directory)/\(name.rawValue).log")
                }
            let file = UnitFile(
                owner: UnitReconciler.owner(module: manifest.name, service: service.name),
                unit: .init(
                    description: "Muster module \(manifest.name), service \(service.name)",
                    after: service.after.compactMap { names[$0] }, requires: service.requires.compactMap { names[$0] }),
                service: .init(
                    type: UnitFile.ServiceType(rawValue: service.type.rawValue) ?? .simple,
                    execStart: [root + executable] + service.exec.dropFirst(),
                    restart: UnitFile.RestartPolicy(rawValue: service.restart.rawValue) ?? .onFailure,
                    restartSec: service.restartSec?.duration, watchdogSec: service.watchdogSec?.duration,
                    environment: environment, user: service.user, workingDirectory: root,
                    readWritePaths: service.readWritePaths, sandbox: sandbox, standardOutput: output,
                    standardError: output),
                scope: configuration.scope)
            return (name, file)
        }
    }

    static func logSource(_ output: ServiceOutput, unit: UnitName) -> UnitLogSource {
        switch output {
        case .journal(let directory): .journal(directory: directory)
        case .files(let directory): .file("\(directory)/\(unit.rawValue).log")
        }
    }

    // MARK: - Mounts

    struct VersionMounts: Sendable {
        /// The mount units' owner marker (`<module>.image/<short digest>`).
        var owner: String
        var directory: String
        var metaWhere: String { "\(directory)/meta" }
        var rootWhere: String { "\(directory)/root" }
    }

    static func mountOwnerPrefix(module: String) -> String { "\(module).image/" }

    /// Mounts one version (erofs image, overlay on top) unless it is mounted, by the configured method.
    private func mountVersion(module: String, imageDigest: String) async throws -> VersionMounts {
        let short = String(imageDigest.prefix(16))
        let mounts = VersionMounts(
            owner: Self.mountOwnerPrefix(module: module) + short,
            directory: "\(store.mountsDirectory)/\(module)-\(short)")
        for path in [mounts.metaWhere, mounts.rootWhere] {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw MusterError(.io, "cannot create mount point \(path): \(error)", cause: UnderlyingError(error))
            }
        }
        switch configuration.mounts {
        case .units:
            let (meta, root, written) = try mountUnits(module: module, imageDigest: imageDigest, mounts: mounts)
            try await startMounts([meta, root], reload: written)
        case .direct(let pid):
            try await DirectMounter(namespacePID: pid).mount(
                image: store.imagePath(imageDigest), meta: mounts.metaWhere, objects: store.objects.path,
                root: mounts.rootWhere)
        }
        return mounts
    }

    /// Writes the two mount units of one version if they are not there.
    private func mountUnits(module: String, imageDigest: String, mounts: VersionMounts) throws -> (
        UnitName, UnitName, Bool
    ) {
        let short = String(imageDigest.prefix(16))
        let owner = mounts.owner
        let metaWhere = mounts.metaWhere
        let rootWhere = mounts.rootWhere
        let meta = try UnitName.mount(where: metaWhere)
        let root = try UnitName.mount(where: rootWhere)
        let metaFile = UnitFile(
            owner: owner, unit: .init(description: "Muster module \(module) image \(short)"),
            mount: .init(
                what: store.imagePath(imageDigest), where: metaWhere, type: "erofs", options: ["ro"], lazyUnmount: true),
            scope: configuration.scope)
        let rootFile = UnitFile(
            owner: owner,
            unit: .init(description: "Muster module \(module) tree \(short)", after: [meta], requires: [meta]),
            mount: .init(
                what: "overlay", where: rootWhere, type: "overlay",
                options: [
                    "ro", "lowerdir=\(metaWhere)::\(store.objects.path)", "metacopy=on", "redirect_dir=follow",
                ], lazyUnmount: true),
            scope: configuration.scope)
        try writer.preflight(metaFile, as: meta)
        try writer.preflight(rootFile, as: root)
        let metaWritten = try writer.write(metaFile, as: meta)
        let rootWritten = try writer.write(rootFile, as: root)
        return (meta, root, metaWritten != .unchanged || rootWritten != .unchanged)
    }

    /// Starts the version's mount units (image first), waiting for each; reloads the manager first when their files
    /// were written (or are not loaded).
    private func startMounts(_ units: [UnitName], reload: Bool) async throws {
        var reload = reload
        if !reload {
            for unit in units where try await manager.state(of: unit).loadState != "loaded" { reload = true }
        }
        if reload { try await manager.daemonReload() }
        for unit in units {
            let job = try await manager.start(unit)
            let outcome = try await manager.waitUntilSettled(
                unit, job: job, timeout: configuration.startTimeout, settle: .zero)
            if case .failed(let state, _) = outcome {
                throw MusterError(
                    .unitFailed,
                    "mount \(unit) failed: Result=\(state.result ?? "?") (ActiveState=\(state.activeState))",
                    hint: "check that the kernel has erofs and overlayfs with data-only lower layers (≥ 6.5)")
            }
        }
    }

    /// Unmounts every mounted version of `module` except `keeping` (overlay before image) and removes the mount
    /// points. Returns what was unmounted (unit names, or mount points for direct mounts).
    @discardableResult
    private func removeStaleMounts(module: String, keeping: VersionMounts?) async throws -> [String] {
        switch configuration.mounts {
        case .units:
            return try await removeStaleMountUnits(module: module, keeping: keeping).map(\.rawValue)
        case .direct(let pid):
            let mounter = DirectMounter(namespacePID: pid)
            let prefix = "\(store.mountsDirectory)/\(module)-"
            let stale = try mounter.mountPoints(under: prefix).filter { point in
                // <mnt>/<module>-<16 hex>/{meta,root}: not another module whose name starts with this one's.
                let rest = point.dropFirst(prefix.count).split(separator: "/")
                return rest.count == 2 && rest[0].utf8.count == 16 && rest[0].utf8.allSatisfy(Self.isHexDigit)
                    && !(keeping.map { point.hasPrefix($0.directory + "/") } ?? false)
            }
            // Overlay (`root`) before its lower layer (`meta`).
            let ordered = stale.sorted { ($0.hasSuffix("/root") ? 0 : 1, $0) < ($1.hasSuffix("/root") ? 0 : 1, $1) }
            for point in ordered { try await mounter.unmount(point) }
            for point in ordered {
                rmdir(point)
                rmdir((point as NSString).deletingLastPathComponent)
            }
            return ordered
        }
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
    }

    /// Stops and removes the module's mount units except `keeping`'s (overlay before image), removes their mount
    /// point directories and reloads the manager when anything was removed.
    private func removeStaleMountUnits(module: String, keeping: VersionMounts?) async throws -> [UnitName] {
        let prefix = Self.mountOwnerPrefix(module: module)
        let stale = try writer.units(ownedBy: { $0.hasPrefix(prefix) && $0 != keeping?.owner })
        guard !stale.isEmpty else { return [] }
        // Deeper mount points first: each version's `root` (overlay) before its `meta` (the overlay's lower layer).
        let ordered = stale.sorted { a, b in
            a.rawValue.hasSuffix("-root.mount") && !b.rawValue.hasSuffix("-root.mount")
                || (a.rawValue.hasSuffix("-root.mount") == b.rawValue.hasSuffix("-root.mount") && a < b)
        }
        var directories = Set<String>()
        for unit in ordered {
            let state = try await manager.state(of: unit)
            if state.loadState == "loaded", state.activeState != "inactive" {
                if state.activeState != "failed" { try await manager.stop(unit) }
                try await waitUntilStopped(unit)
            }
            if state.loadState == "loaded", state.activeState == "failed" { try await manager.resetFailed(unit) }
            if let whereLine = try? String(contentsOfFile: writer.path(of: unit), encoding: .utf8)
                .split(separator: "\n").first(where: { $0.hasPrefix("Where=") })
            {
                directories.insert(String(whereLine.dropFirst("Where=".count)))
            }
            try writer.remove(unit)
        }
        try await manager.daemonReload()
        for directory in directories.sorted(by: >) {
            rmdir(directory)
            rmdir((directory as NSString).deletingLastPathComponent)
        }
        return ordered
    }

    private func waitUntilStopped(_ unit: UnitName) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: configuration.startTimeout)
        while clock.now < deadline {
            let state = try await manager.state(of: unit)
            if state.activeState == "inactive" || state.activeState == "failed" { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw MusterError(.timeout, "unit \(unit) did not stop within \(configuration.startTimeout)")
    }

    /// Points `<store>/current/<module>` at `root` atomically (a new symlink renamed over the old one).
    private func switchCurrent(module: String, to root: String) throws {
        let link = currentRoot(module: module)
        if let existing = try? FileManager.default.destinationOfSymbolicLink(atPath: link), existing == root { return }
        let temporary = "\(store.currentDirectory)/.\(module).\(UInt32.random(in: 0...UInt32.max))"
        guard symlink(root, temporary) == 0 else { throw NodeModuleStore.ioError("symlink", temporary) }
        guard rename(temporary, link) == 0 else {
            let error = NodeModuleStore.ioError("rename", link)
            unlink(temporary)
            throw error
        }
    }

    // MARK: - Records

    func recordPath(module: String) -> String { "\(store.attachedDirectory)/\(module).json" }

    func loadRecord(module: String) throws -> AttachedModule? {
        let path = recordPath(module: module)
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do {
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(AttachedModule.self, from: data)
        } catch {
            throw MusterError(
                .io, "\(path) is not a record of an attached module: \(error)",
                hint: "detach the module (or remove the file) and attach it again", cause: UnderlyingError(error))
        }
    }

    private func saveRecord(_ record: AttachedModule) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let path = recordPath(module: record.module)
        do {
            // Foundation's atomic write: a temporary file in the same directory renamed over the target.
            try encoder.encode(record).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MusterError(.io, "cannot write \(path): \(error)", cause: UnderlyingError(error))
        }
    }
}

/// Runs async operations one at a time, in arrival order (an actor alone would interleave them at every `await`).
actor AsyncGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        if busy {
            await withCheckedContinuation { waiters.append($0) }
        } else {
            busy = true
        }
        defer {
            if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
        }
        return try await body()
    }
}
