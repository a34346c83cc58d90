import Foundation
import Shared
import Synchronization

/// One module operation at a time on a node: two attach tasks of modules that share objects would otherwise write
/// the same partial files, and a detach's garbage collection could remove objects a fetch has just stored for a
/// module that is not attached yet.
actor ModuleTaskGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func withExclusiveAccess<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        if busy {
            await withCheckedContinuation { waiters.append($0) }
        } else {
            busy = true
        }
        defer {
            if waiters.isEmpty {
                busy = false
            } else {
                waiters.removeFirst().resume()
            }
        }
        return try await body()
    }
}

/// The `attachModule` task (spec ``AttachModuleSpec``): fetch what the node lacks of the module version into
/// its store (``ModuleFetcher``), check the stored copy (image digest, every object re-hashed), then attach it
/// with the ``ModuleAttacher`` (verify, mount, write and start the units).
///
/// Progress: `{"phase": "fetch", "bytesReceived", "bytesToFetch", "filesFetched", "filesToFetch"}`, at most
/// every 250 ms, then `{"phase": "attach"}`. Result: `{module, version, imageDigest, fetch: <fetch report>,
/// attach: <attach report>}`.
struct AttachModuleHandler: TaskHandler {
    /// What happens after the fetch.
    enum AttachStep: Sendable {
        /// Attach with this attacher (the agent daemon).
        case attacher(ModuleAttacher)
        /// This node cannot attach modules (no systemd manager, no trusted key): the task fails after the fetch
        /// with this reason, so the operator sees why.
        case unavailable(reason: String)
        /// Fetch and verify only (the transfer tests, which have no systemd manager in-process).
        case fetchOnly
    }

    let fetcher: ModuleFetcher
    let step: AttachStep
    let gate: ModuleTaskGate

    init(fetcher: ModuleFetcher, step: AttachStep, gate: ModuleTaskGate = ModuleTaskGate()) {
        self.fetcher = fetcher
        self.step = step
        self.gate = gate
    }

    struct Result: Codable, Sendable, Equatable {
        var module: String
        var version: String
        var imageDigest: String
        var fetch: ModuleFetcher.Report
        /// `nil` with ``AttachStep/fetchOnly``.
        var attach: ModuleAttacher.AttachReport?
    }

    func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let request: AttachModuleSpec
        do {
            request = try spec.decode(AttachModuleSpec.self)
        } catch {
            throw MusterError(
                .invalidInput, "the attachModule spec is not {name, version, imageDigest}: \(error)")
        }
        let spec = request
        let fetcher = self.fetcher
        let step = self.step
        let result = try await gate.withExclusiveAccess { () async throws -> Result in
            let throttle = FetchProgressThrottle()
            let (payload, report) = try await fetcher.fetch(imageDigest: spec.imageDigest, module: spec.name) { step in
                guard throttle.due(final: step.filesFetched == step.filesToFetch) else { return }
                await progress(
                    .object([
                        "phase": .string("fetch"), "bytesReceived": .number(Double(step.bytesReceived)),
                        "bytesToFetch": .number(Double(step.bytesToFetch)),
                        "filesFetched": .number(Double(step.filesFetched)),
                        "filesToFetch": .number(Double(step.filesToFetch)),
                    ]))
            }
            guard payload.manifest.name == spec.name, payload.manifest.version == spec.version else {
                throw MusterError(
                    .verificationFailed,
                    "image \(spec.imageDigest) is \(payload.manifest.name)@\(payload.manifest.version), not "
                        + "\(spec.name)@\(spec.version)")
            }
            var result = Result(
                module: payload.manifest.name, version: payload.manifest.version, imageDigest: spec.imageDigest,
                fetch: report, attach: nil)
            switch step {
            case .attacher(let attacher):
                // The attacher verifies signature, image digest and every object before it mounts anything.
                await progress(.object(["phase": .string("attach")]))
                result.attach = try await attacher.attach(imageDigest: spec.imageDigest)
            case .unavailable(let reason):
                throw MusterError(
                    .unitNotFound, "module \(spec.name)@\(spec.version) was fetched, but this node cannot attach it: \(reason)",
                    hint: "run the agent under systemd (or with --systemd user) with a module signing key")
            case .fetchOnly:
                // What is in the store is what would be mounted: check it, whoever wrote it.
                guard
                    let (imageDigest, _) = try ContentDigest.sha256(
                        ofFileAt: fetcher.layout.imagePath(spec.imageDigest)),
                    imageDigest == spec.imageDigest
                else {
                    throw MusterError(.digestMismatch, "the stored image \(spec.imageDigest) does not match its digest")
                }
                try fetcher.layout.objects.verifyOrThrow(payload.objects)
            }
            return result
        }
        return try JSONValue(encoding: result)
    }
}

/// The `detachModule` task (spec ``DetachModuleSpec``): stop and remove the module's units, unmount, collect
/// objects no attached module references. Detaching a module that is not attached succeeds and changes nothing.
/// Result: the attacher's detach report.
struct DetachModuleHandler: TaskHandler {
    let step: AttachModuleHandler.AttachStep
    let gate: ModuleTaskGate

    init(step: AttachModuleHandler.AttachStep, gate: ModuleTaskGate) {
        self.step = step
        self.gate = gate
    }

    func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let request: DetachModuleSpec
        do {
            request = try spec.decode(DetachModuleSpec.self)
        } catch {
            throw MusterError(.invalidInput, "the detachModule spec is not {name}: \(error)")
        }
        guard case .attacher(let attacher) = step else {
            if case .unavailable(let reason) = step {
                throw MusterError(.unitNotFound, "this node cannot detach modules: \(reason)")
            }
            throw MusterError(.unitNotFound, "this agent runs no module attacher")
        }
        let report = try await gate.withExclusiveAccess { try await attacher.detach(module: request.name) }
        return try JSONValue(encoding: report)
    }
}

/// Lets a progress report through at most every 250 ms (and always the final one).
final class FetchProgressThrottle: Sendable {
    private let last = Mutex<ContinuousClock.Instant?>(nil)

    func due(final: Bool) -> Bool {
        let now = ContinuousClock.now
        return last.withLock { last in
            if !final, let previous = last, now - previous < .milliseconds(250) { return false }
            last = now
            return true
        }
    }
}
