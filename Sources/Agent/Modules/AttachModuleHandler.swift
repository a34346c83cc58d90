import Foundation
import Shared
import Synchronization

/// One fetch at a time on a node: two attach tasks of modules that share objects would otherwise write the
/// same partial files.
actor FetchGate {
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
/// its store (``ModuleFetcher``), check the stored copy (image digest, every object re-hashed), then attach it.
///
/// Progress: `{"phase": "fetch", "bytesReceived", "bytesToFetch", "filesFetched", "filesToFetch"}`, at most
/// every 250 ms. Result: the fetch report under `fetch`.
public struct AttachModuleHandler: TaskHandler {
    let fetcher: ModuleFetcher
    let gate = FetchGate()

    public init(fetcher: ModuleFetcher) {
        self.fetcher = fetcher
    }

    public struct Result: Codable, Sendable, Equatable {
        public var module: String
        public var version: String
        public var imageDigest: String
        public var fetch: ModuleFetcher.Report
    }

    public func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let request: AttachModuleSpec
        do {
            request = try spec.decode(AttachModuleSpec.self)
        } catch {
            throw MusterError(
                .invalidInput, "the attachModule spec is not {name, version, imageDigest}: \(error)")
        }
        let spec = request
        let fetcher = self.fetcher
        let (payload, report) = try await gate.withExclusiveAccess {
            let throttle = FetchProgressThrottle()
            return try await fetcher.fetch(imageDigest: spec.imageDigest) { step in
                guard throttle.due(final: step.filesFetched == step.filesToFetch) else { return }
                await progress(
                    .object([
                        "phase": .string("fetch"), "bytesReceived": .number(Double(step.bytesReceived)),
                        "bytesToFetch": .number(Double(step.bytesToFetch)),
                        "filesFetched": .number(Double(step.filesFetched)),
                        "filesToFetch": .number(Double(step.filesToFetch)),
                    ]))
            }
        }
        guard payload.manifest.name == spec.name, payload.manifest.version == spec.version else {
            throw MusterError(
                .verificationFailed,
                "image \(spec.imageDigest) is \(payload.manifest.name)@\(payload.manifest.version), not "
                    + "\(spec.name)@\(spec.version)")
        }
        // What is in the store is what gets mounted: check it, whoever wrote it.
        guard let (imageDigest, _) = try ContentDigest.sha256(ofFileAt: fetcher.layout.imagePath(spec.imageDigest)),
            imageDigest == spec.imageDigest
        else {
            throw MusterError(.digestMismatch, "the stored image \(spec.imageDigest) does not match its digest")
        }
        try fetcher.layout.objects.verifyOrThrow(payload.objects)
        return try JSONValue(
            encoding: Result(
                module: payload.manifest.name, version: payload.manifest.version, imageDigest: spec.imageDigest,
                fetch: report))
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
