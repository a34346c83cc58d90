import Crypto
import Foundation
import Logging
import NIOCore
import Shared
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Brings a published module version into the node's store over the coordinator session: descriptor, image
/// and every object the node lacks (DESIGN §5, issue 3 item 4).
///
/// - The descriptor is fetched first and verified with the cluster's module key (``ModuleKeyFile``); its image
///   digest must be the one asked for. It is written to the store **last**, so a descriptor in the store means
///   its image and objects are there too.
/// - Only objects missing from `objects/` travel, in chunks of ``Configuration/chunkSize`` with at most
///   ``Configuration/window`` requests outstanding (the backpressure bound: never more than window × chunk
///   bytes in flight, whatever the link).
/// - Each file is written through ``ContentWriter`` into `partial/`, hashed as it arrives, and renamed 0444 into
///   place only when its sha256 and size match; a mismatch deletes it and fails with `DIGEST_MISMATCH`.
/// - A lost connection keeps the partial file: the fetcher waits for the next session and resumes at the
///   partial file's end (the bytes already there are re-hashed, not re-sent). A failed task that is delivered
///   again resumes the same way.
///
/// Store layout (a contract with the attacher):
/// ```
/// <state-dir>/modules/objects/                        ObjectDirectory layout, 0444, shared by modules & versions
/// <state-dir>/modules/images/<image-digest>.erofs      0444
/// <state-dir>/modules/descriptors/<image-digest>.json  the signed descriptor JSON as published
/// <state-dir>/modules/partial/                         transfers in progress (never read by the attacher)
/// ```
public struct ModuleFetcher: Sendable {
    public struct Configuration: Sendable {
        /// Requests outstanding at once.
        public var window: Int
        /// Bytes per request (at most ``ObjectRequest/maximumLength``; keep it well below the max frame size).
        public var chunkSize: Int
        /// How long to wait for a new session after the connection dropped mid-transfer.
        public var reconnectWait: Duration
        /// Resumes after lost connections within one fetch before giving up.
        public var maximumResumes: Int
        /// Verified files whose staging (writeback start, chmod, close) may run at once, behind the transfer.
        public var pendingInstalls: Int
        /// Transfers that run at once, each writing its own files with its share of ``window``.
        public var lanes: Int

        public init(
            window: Int = 16, chunkSize: Int = 1 << 20, reconnectWait: Duration = .seconds(120),
            maximumResumes: Int = 50, pendingInstalls: Int = 8, lanes: Int = 2
        ) {
            self.lanes = max(1, lanes)
            self.window = max(1, window)
            self.pendingInstalls = max(1, pendingInstalls)
            self.chunkSize = min(max(4096, chunkSize), ObjectRequest.maximumLength)
            self.reconnectWait = reconnectWait
            self.maximumResumes = maximumResumes
        }

        /// Chunks that fit a frame of `maxFrameBytes` with room for the envelope.
        public static func fitting(maxFrameBytes: Int) -> Configuration {
            Configuration(chunkSize: min(1 << 20, max(4096, maxFrameBytes - (16 << 10))))
        }
    }

    /// Paths of the node's module store.
    public struct Layout: Sendable {
        public let root: String

        public init(stateDirectory: String) { root = "\(stateDirectory)/modules" }

        public var objects: ObjectDirectory { ObjectDirectory(path: "\(root)/objects") }
        public var imagesDirectory: String { "\(root)/images" }
        public var descriptorsDirectory: String { "\(root)/descriptors" }
        public var partialDirectory: String { "\(root)/partial" }
        public func imagePath(_ digest: String) -> String { "\(imagesDirectory)/\(digest).erofs" }
        public func descriptorPath(_ digest: String) -> String { "\(descriptorsDirectory)/\(digest).json" }

        func prepare() throws {
            for directory in [objects.path, imagesDirectory, descriptorsDirectory, partialDirectory] {
                do {
                    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                } catch {
                    throw MusterError(.io, "cannot create \(directory): \(error)", cause: UnderlyingError(error))
                }
            }
        }
    }

    /// What one fetch did.
    public struct Report: Codable, Sendable, Equatable {
        public var name: String
        public var version: String
        public var imageDigest: String
        /// Objects the module has.
        public var objects: Int
        /// Objects transferred by this fetch.
        public var fetchedObjects: Int
        /// Objects that were already in the store (shared with other modules or versions).
        public var presentObjects: Int
        /// The image was transferred (whole or, with ``imageDeltaBytes``, as a delta).
        public var imageFetched: Bool
        /// The descriptor was transferred (whole or, with ``descriptorDeltaBytes``, as a delta).
        public var descriptorFetched: Bool
        /// Chunk bytes received by this fetch (descriptor, image and objects, whole or as deltas, including a
        /// delta that was refused).
        public var bytesReceived: UInt64
        /// Bytes of partial files from interrupted transfers that were kept instead of fetched again.
        public var resumedBytes: UInt64
        /// Times the fetch waited for a new session and resumed.
        public var resumes: Int
        /// Wall time of the fetch, milliseconds (reported, never asserted on).
        public var milliseconds: Int
        /// The image digest of the earlier version deltas were asked for against (`nil`: none in the store).
        public var deltaBase: String? = nil
        /// Bytes of the image delta received, when the image was rebuilt from one.
        public var imageDeltaBytes: UInt64? = nil
        /// Bytes of the descriptor delta received, when the descriptor was rebuilt from one.
        public var descriptorDeltaBytes: UInt64? = nil
    }

    /// Progress of the object and image transfer.
    public struct Progress: Sendable, Equatable {
        public var bytesReceived: UInt64
        public var bytesToFetch: UInt64
        public var filesFetched: Int
        public var filesToFetch: Int
    }

    public let layout: Layout
    public let transport: ObjectTransport
    public let configuration: Configuration
    /// The keys descriptors must be signed with (read when a fetch starts: the key may arrive with a `welcome`).
    let trustedKeys: @Sendable () throws -> [Curve25519.Signing.PublicKey]
    let logger: Logger

    public init(
        stateDirectory: String, transport: ObjectTransport, configuration: Configuration = Configuration(),
        trustedKeys: @escaping @Sendable () throws -> [Curve25519.Signing.PublicKey], logger: Logger
    ) {
        self.layout = Layout(stateDirectory: stateDirectory)
        self.transport = transport
        self.configuration = configuration
        self.trustedKeys = trustedKeys
        self.logger = logger
    }

    /// One file to transfer.
    struct Item: Sendable {
        var kind: TransferKind
        var digest: String
        var size: UInt64
        var finalPath: String
        var partialPath: String
    }

    /// Fetches what is missing of the module whose image is `imageDigest`.
    ///
    /// When the store holds another version of the module (named by `module` for the descriptor, by the
    /// descriptor for the image), the descriptor and image are first asked for as deltas against it (protocol
    /// v3, ``BinaryDelta``); any failure of that falls back to the whole file.
    ///
    /// - Returns: The verified descriptor payload and what was transferred.
    /// - Throws: `MusterError` `.verificationFailed` (signature, key, wrong image), `.digestMismatch` (a file's
    ///   content did not match its digest: nothing of it is kept), `.notFound` (the coordinator lacks a file),
    ///   `.io` (e.g. disk full: the file being written is deleted), `.timeout` (no session came back),
    ///   `.invalidInput` (not a digest).
    public func fetch(
        imageDigest: String, module: String? = nil, progress: @Sendable (Progress) async -> Void = { _ in }
    ) async throws -> (payload: ModuleDescriptor.Payload, report: Report) {
        guard ObjectDirectory.isDigest(imageDigest) else {
            throw MusterError(.invalidInput, "'\(imageDigest)' is not an image digest (a lowercase hex sha256)")
        }
        try layout.prepare()
        let started = ContinuousClock.now
        let receivedBefore = transport.receivedBytes
        var resumes = 0

        // 1. The descriptor: from the store, from a delta, or fetched whole; verified either way.
        let descriptorPath = layout.descriptorPath(imageDigest)
        let stored = FileManager.default.contents(atPath: descriptorPath)
        var base = module.flatMap { deltaBase(module: $0, excluding: imageDigest) }
        var descriptorDeltaBytes: UInt64?
        // The base deltas were asked for against, for the report.
        var askedBase = stored == nil ? base?.imageDigest : nil
        let descriptorData: Data
        let payload: ModuleDescriptor.Payload
        if let stored {
            descriptorData = stored
            payload = try verifiedPayload(stored, imageDigest: imageDigest)
        } else if let base,
            let rebuilt = try await resuming(
                &resumes, { try await descriptorByDelta(imageDigest: imageDigest, base: base) })
        {
            (descriptorData, payload, descriptorDeltaBytes) = rebuilt
        } else {
            descriptorData = try await resuming(&resumes) {
                Data(try await fetchInMemory(.descriptor, digest: imageDigest, maximumSize: Self.maximumDescriptor))
            }
            payload = try verifiedPayload(descriptorData, imageDigest: imageDigest)
        }

        // 2a. The image from a delta against an earlier version's image, when there is one.
        if base == nil { base = deltaBase(module: payload.manifest.name, excluding: imageDigest) }
        var imageDeltaBytes: UInt64?
        if let base, !isStored(layout.imagePath(imageDigest)) {
            askedBase = base.imageDigest
            imageDeltaBytes = try await resuming(&resumes) {
                try await imageByDelta(imageDigest: imageDigest, size: payload.image.size, base: base)
            }
        }

        // 2b. The image (unless rebuilt from a delta) and the objects this node lacks.
        var items: [Item] = []
        let imageMissing = imageDeltaBytes != nil || !isStored(layout.imagePath(imageDigest))
        if imageMissing && imageDeltaBytes == nil {
            items.append(item(.image, digest: imageDigest, size: payload.image.size))
        }
        let missingObjects = payload.objects.filter { !isStored(layout.objects.path(of: $0.digest)) }
        for object in missingObjects {
            items.append(item(.object, digest: object.digest, size: object.size))
        }
        let resumedBytes = items.reduce(UInt64(0)) { sum, item in
            sum + min(item.size, FileStatus.lstat(item.partialPath)?.size ?? 0)
        }
        let total = Progress(
            bytesReceived: 0, bytesToFetch: items.reduce(0) { $0 + $1.size } - resumedBytes, filesFetched: 0,
            filesToFetch: items.count)
        logger.info(
            "fetching module",
            metadata: [
                "module": "\(payload.manifest.name)@\(payload.manifest.version)", "image": "\(imageDigest)",
                "missingObjects": "\(missingObjects.count)/\(payload.objects.count)",
                "bytes": "\(total.bytesToFetch)", "resumedBytes": "\(resumedBytes)",
            ])
        var done = total
        done.bytesReceived = 0
        try await resuming(&resumes) {
            // After a resume, files committed before the connection dropped are in place: skip them.
            let remaining = items.filter { !isStored($0.finalPath) }
            try await transfer(remaining, progress: &done, report: progress)
        }

        // 3. The descriptor last: its presence means the module is complete in the store.
        if stored == nil {
            let writer = try ContentWriter(
                temporaryPath: "\(layout.partialDirectory)/descriptor-\(imageDigest)", resume: false)
            do {
                try descriptorData.withUnsafeBytes { try writer.write($0) }
                try writer.commit(expectedDigest: nil, to: descriptorPath)
            } catch {
                writer.discard()
                throw error
            }
        }
        let report = Report(
            name: payload.manifest.name, version: payload.manifest.version, imageDigest: imageDigest,
            objects: payload.objects.count, fetchedObjects: missingObjects.count,
            presentObjects: payload.objects.count - missingObjects.count, imageFetched: imageMissing,
            descriptorFetched: stored == nil, bytesReceived: transport.receivedBytes - receivedBefore,
            resumedBytes: resumedBytes, resumes: resumes,
            milliseconds: (ContinuousClock.now - started).wireMilliseconds, deltaBase: askedBase, imageDeltaBytes: imageDeltaBytes, descriptorDeltaBytes: descriptorDeltaBytes)
        logger.info(
            "module fetched",
            metadata: [
                "module": "\(report.name)@\(report.version)", "bytes": "\(report.bytesReceived)",
                "objects": "\(report.fetchedObjects) fetched, \(report.presentObjects) present",
                "resumes": "\(report.resumes)",
                "imageDelta": "\(imageDeltaBytes.map { "\($0)" } ?? "-")",
                "descriptorDelta": "\(descriptorDeltaBytes.map { "\($0)" } ?? "-")",
            ])
        return (payload, report)
    }

    private func item(_ kind: TransferKind, digest: String, size: UInt64) -> Item {
        Item(
            kind: kind, digest: digest, size: size,
            finalPath: kind == .image ? layout.imagePath(digest) : layout.objects.path(of: digest),
            partialPath: "\(layout.partialDirectory)/\(kind.rawValue)-\(digest)")
    }

    private func isStored(_ path: String) -> Bool {
        FileStatus.lstat(path)?.kind == .regular
    }

    /// Runs `body` once a session is there; when the connection drops, waits for the next one and runs it again.
    private func resuming<T>(_ resumes: inout Int, _ body: () async throws -> T) async throws -> T {
        var lost: Int?
        while true {
            let generation = try await transport.waitForSession(limit: configuration.reconnectWait, newerThan: lost)
            do {
                return try await body()
            } catch let error as MusterError where error.code == .connectionFailed {
                lost = generation
                resumes += 1
                guard resumes <= configuration.maximumResumes else {
                    throw MusterError(
                        .connectionFailed,
                        "the connection to the coordinator dropped \(resumes) times during the transfer; giving up",
                        hint: "the task is retried and resumes where it stopped")
                }
                logger.notice("connection lost during a module transfer; resuming with the next session")
            }
        }
    }

    /// A small file (a descriptor, or a delta against `base`) into memory, in ranged requests; at most
    /// `maximumSize` bytes. `oversize` is the error code for a file announced larger than that.
    func fetchInMemory(
        _ kind: TransferKind, digest: String, base: String? = nil, maximumSize: Int,
        oversize: MusterError.Code = .protocolError
    ) async throws -> [UInt8] {
        var data: [UInt8] = []
        var offset: UInt64 = 0
        while true {
            let id = try await transport.send(
                ObjectRequest(kind: kind, digest: digest, offset: offset, length: configuration.chunkSize, base: base))
            let chunk = try await transport.response(to: id)
            guard chunk.header.kind == kind, chunk.header.digest == digest, chunk.header.offset == offset else {
                throw MusterError(
                    .protocolError,
                    "the coordinator answered a \(kind.rawValue) request for \(digest) with another chunk")
            }
            guard chunk.header.totalSize <= UInt64(maximumSize) else {
                throw MusterError(
                    oversize,
                    "the \(kind.rawValue) is \(chunk.header.totalSize) bytes, more than the \(maximumSize) accepted")
            }
            if offset == 0 { data.reserveCapacity(Int(chunk.header.totalSize)) }
            data.append(contentsOf: chunk.data.readableBytesView)
            offset += UInt64(chunk.data.readableBytes)
            guard offset <= chunk.header.totalSize else {
                throw MusterError(.protocolError, "the coordinator sent more than the \(kind.rawValue)'s size")
            }
            if offset == chunk.header.totalSize { return data }
            guard chunk.data.readableBytes > 0 else {
                throw MusterError(.protocolError, "the coordinator sent an empty chunk before the end of \(digest)")
            }
        }
    }

    /// One planned request (or, with `length` 0, only the commit of a partial file that is already complete).
    private struct Step {
        var item: Int
        var offset: UInt64
        var length: Int
        var last: Bool
    }

    /// The progress the lanes of one transfer add to.
    private final class SharedProgress: Sendable {
        let state: Mutex<Progress>
        init(_ progress: Progress) { state = Mutex(progress) }
    }

    /// A staged file and where it goes.
    private typealias StagedFile = (staged: ContentWriter.Staged, finalPath: String)

    /// Transfers `items` in ``Configuration/lanes`` lanes that run at once, each with its share of the window of
    /// outstanding requests; within a lane answers are consumed in request order, so each file is written
    /// sequentially by one lane. Lanes let writing and hashing (the agent's heaviest work) use more than one core.
    ///
    /// Verified files are staged behind the transfer and made durable and moved into place together at the end
    /// (``ContentWriter/installStaged(_:syncing:)``: two syncfs calls instead of an fsync per file and per
    /// directory, each one a disk cache flush; together they had halved the transfer rate). The end comes on
    /// success and on failure alike, so after this function nothing verified is left out of place and the retry
    /// after a lost connection sees every finished file in its store.
    private func transfer(
        _ items: [Item], progress: inout Progress, report: @Sendable (Progress) async -> Void
    ) async throws {
        // Lanes balanced by bytes: each file goes to the lane with the fewest bytes so far, in the given order.
        let laneCount = max(1, min(configuration.lanes, items.count))
        var lanes = [[Item]](repeating: [], count: laneCount)
        var laneBytes = [UInt64](repeating: 0, count: laneCount)
        for item in items {
            let lane = laneBytes.indices.min { laneBytes[$0] < laneBytes[$1] } ?? 0
            lanes[lane].append(item)
            laneBytes[lane] += item.size
        }
        let window = max(1, configuration.window / laneCount)
        let shared = SharedProgress(progress)
        var staged: [StagedFile] = []
        var failure: (any Error)?
        var keptPartials: [String] = []
        // The lanes finish before this returns, so `report` does not really escape.
        await withoutActuallyEscaping(report) { report in
            await withTaskGroup(of: LaneResult.self) { group in
                for lane in lanes {
                    group.addTask {
                        await self.transferLane(lane, window: window, progress: shared, report: report)
                    }
                }
                for await result in group {
                    staged += result.staged
                    if let path = result.keptPartial { keptPartials.append(path) }
                    if let error = result.error {
                        // The first error that is not a consequence of another lane's wins.
                        if failure == nil || failure is CancellationError { failure = error }
                        group.cancelAll()
                    }
                }
            }
        }
        progress = shared.state.withLock { $0 }
        let fileSystem = layout.partialDirectory
        let batch = staged
        if let failure {
            // A lane stopped because another one failed keeps its partial file for a resume; a failure that is
            // not an interruption (a full disk, a digest mismatch) leaves none, as with one lane.
            let interrupted = (failure as? MusterError)?.code == .connectionFailed || failure is CancellationError
            if !interrupted { for path in keptPartials { unlink(path) } }
            try? await runBlocking { try ContentWriter.installStaged(batch, syncing: fileSystem) }
            throw failure
        }
        try await runBlocking { try ContentWriter.installStaged(batch, syncing: fileSystem) }
    }

    /// One lane of ``transfer(_:progress:report:)``: its files' chunks with at most `window` requests outstanding.
    /// Never throws: returns what it staged (also after a failure, so it still goes into place) and the error.
    private func transferLane(
        _ items: [Item], window: Int, progress shared: SharedProgress, report: @Sendable (Progress) async -> Void
    ) async -> LaneResult {
        var steps: [Step] = []
        for (index, item) in items.enumerated() {
            var start = FileStatus.lstat(item.partialPath)?.size ?? 0
            if start > item.size {
                unlink(item.partialPath)
                start = 0
            }
            if start == item.size {
                steps.append(Step(item: index, offset: start, length: 0, last: true))
                continue
            }
            var offset = start
            while offset < item.size {
                let length = Int(min(UInt64(configuration.chunkSize), item.size - offset))
                steps.append(Step(item: index, offset: offset, length: length, last: offset + UInt64(length) == item.size))
                offset += UInt64(length)
            }
        }

        var inflight: [(step: Step, id: String?)] = []
        var head = 0
        var next = 0
        var writer: ContentWriter?
        var writerItem = -1
        // Completed, verified files are staged (writeback started, made read-only, closed) by child tasks off the
        // cooperative pool while the next chunks arrive, at most `pendingInstalls` at once.
        var keptPartial: String?
        let result = await withTaskGroup(of: Result<StagedFile, any Error>.self) { staging in
            var pending = 0
            var staged: [StagedFile] = []
            var failure: (any Error)?
            func collect(_ result: Result<StagedFile, any Error>?) {
                switch result {
                case .success(let file): staged.append(file)
                case .failure(let error): if failure == nil { failure = error }
                case nil: break
                }
            }
            do {
                while head < steps.count {
                    try Task.checkCancellation()
                    while next < steps.count, next - head < window {
                        let step = steps[next]
                        let item = items[step.item]
                        let id: String? =
                            step.length == 0
                            ? nil
                            : try await transport.send(
                                ObjectRequest(
                                    kind: item.kind, digest: item.digest, offset: step.offset, length: step.length))
                        inflight.append((step, id))
                        next += 1
                    }
                    let (step, id) = inflight[head]
                    head += 1
                    let item = items[step.item]
                    if writerItem != step.item {
                        writer = try ContentWriter(temporaryPath: item.partialPath, resume: true)
                        writerItem = step.item
                    }
                    guard let current = writer else { throw MusterError(.internal, "no writer for \(item.digest)") }
                    guard current.offset == step.offset else {
                        throw MusterError(
                            .internal, "\(item.partialPath) is \(current.offset) bytes, expected \(step.offset)")
                    }
                    if let id {
                        let chunk = try await transport.response(to: id)
                        guard chunk.header.kind == item.kind, chunk.header.digest == item.digest,
                            chunk.header.offset == step.offset
                        else {
                            throw MusterError(
                                .protocolError,
                                "the coordinator answered a request for \(item.digest) with another chunk")
                        }
                        guard chunk.header.totalSize == item.size, chunk.data.readableBytes == step.length else {
                            throw MusterError(
                                .digestMismatch,
                                "the coordinator's \(item.kind.rawValue) \(item.digest) is \(chunk.header.totalSize) "
                                    + "bytes, signed: \(item.size) bytes; refused, nothing was stored",
                                hint:
                                    "the coordinator's copy is damaged; publish the module again from an intact build"
                            )
                        }
                        try current.write(chunk.data)
                    }
                    var snapshot: Progress?
                    if step.last {
                        // The digest is checked here; only the staging runs in the background.
                        let sealed = try current.seal(expectedDigest: item.digest, expectedSize: item.size)
                        writer = nil
                        writerItem = -1
                        if pending >= configuration.pendingInstalls {
                            collect(await staging.next())
                            pending -= 1
                            if let failure { throw failure }
                        }
                        let finalPath = item.finalPath
                        staging.addTask {
                            do { return .success((try await runBlocking { try sealed.stage() }, finalPath)) } catch {
                                return .failure(error)
                            }
                        }
                        pending += 1
                    }
                    if id != nil || step.last {
                        snapshot = shared.state.withLock {
                            $0.bytesReceived += UInt64(step.length)
                            if step.last { $0.filesFetched += 1 }
                            return $0
                        }
                    }
                    if let snapshot { await report(snapshot) }
                }
            } catch {
                for entry in inflight[head...] {
                    if let id = entry.id { transport.abandon(id) }
                }
                let interrupted = (error as? MusterError)?.code == .connectionFailed || error is CancellationError
                if interrupted {
                    // Keep what arrived: the next attempt continues at the partial file's end.
                    if let writer {
                        writer.keepForResume()
                        keptPartial = writer.temporaryPath
                    }
                } else {
                    writer?.discard()
                    if writerItem >= 0 { unlink(items[writerItem].partialPath) }
                }
                failure = error
            }
            // Files already verified are still staged (staging does not react to cancellation).
            while let result = await staging.next() { collect(result) }
            return (staged, failure)
        }
        return LaneResult(staged: result.0, error: result.1, keptPartial: keptPartial)
    }

    /// What a lane staged, how it ended, and the partial file it kept for a resume.
    private struct LaneResult: Sendable {
        var staged: [StagedFile]
        var error: (any Error)?
        var keptPartial: String?
    }
}
