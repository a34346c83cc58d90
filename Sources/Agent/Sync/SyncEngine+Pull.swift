import Foundation
import Shared

extension SyncEngine {
    /// Pulls a tree from another node's rsync daemon (``RsyncDaemon``) into the local `spec.destination`.
    ///
    /// `spec.source` is `rsync://muster@HOST:PORT/MODULE/`. The daemon may still be starting: the pull waits up
    /// to `connectWithin` for its port. Precheck: an rsync `--dry-run --stats` against the daemon says how many
    /// bytes would be transferred; those plus the margin must fit the destination's free space. The secret goes to
    /// rsync in a 0600 `--password-file` that is removed afterwards. Verification needs a local source: only
    /// `verify: none`.
    /// - Throws: ``MusterError`` `.usage` / `.invalidInput` for a bad spec or a refused precheck (nothing copied),
    ///   `.connectionFailed` when the daemon never answers.
    func pull(
        _ spec: SyncSpec, secret: String, stateDirectory: String, connectWithin: Duration = .seconds(60),
        onEvent: @escaping @Sendable (Event) -> Void = { _ in }
    ) async throws -> Report {
        let started = ContinuousClock.now
        guard let url = URLComponents(string: spec.source), url.scheme == "rsync", let host = url.host,
            let port = url.port, url.path.count > 1
        else {
            throw MusterError(.usage, "the source '\(spec.source)' is not rsync://USER@HOST:PORT/MODULE/")
        }
        try SyncSpec(source: "/nonexistent-muster-pull-source", destination: spec.destination, excludes: spec.excludes)
            .validate()
        guard spec.verify == .none else {
            throw MusterError(.usage, "verification needs a local source; pull with verify none")
        }
        if let kind = FileStatus.lstat(spec.destination)?.kind, kind != .directory {
            throw MusterError(.invalidInput, "the destination '\(spec.destination)' exists and is not a directory")
        }
        let clock = ContinuousClock()
        let deadline = clock.now + connectWithin
        while !(await RsyncDaemon.accepts(host: host, port: port)) {
            guard clock.now < deadline else {
                throw MusterError(
                    .connectionFailed,
                    "the source node's rsync daemon at \(host):\(port) did not answer within \(connectWithin)")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let directory = try RsyncDaemon.privateDirectory(under: stateDirectory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let passwordFile = "\(directory)/password"
        try RsyncDaemon.writePrivate(secret + "\n", to: passwordFile)
        try FileManager.default.createDirectory(atPath: spec.destination, withIntermediateDirectories: true)

        var arguments = Rsync.baseOptions + ["--password-file=\(passwordFile)"]
        if spec.delete { arguments.append("--delete") }
        for pattern in spec.excludes { arguments.append("--exclude=\(pattern)") }
        let source = spec.source.hasSuffix("/") ? spec.source : spec.source + "/"
        let destination = SyncSpec.normalized(spec.destination) + "/"

        // Precheck through the daemon: what a real run would transfer.
        let dry = try await rsync.run(
            arguments: arguments + ["--dry-run", source, destination], interval: .seconds(3600), logger: logger
        ) { _ in }
        guard dry.status.severity != RsyncExitStatus.Severity.failure else {
            throw MusterError(
                .io, "cannot list the source through the rsync daemon: \(dry.status.message())", hint: dry.status.hint)
        }
        let needed = dry.stats.transferredFileBytes ?? 0
        let available = try TreeWalker.availableBytes(at: spec.destination)
        let required = UInt64((Double(needed) * (1 + spaceMargin)).rounded(.up))
        let check = Precheck(
            sourceBytes: dry.stats.totalFileBytes ?? needed, sourceEntries: dry.stats.files ?? 0,
            alreadyPresentBytes: (dry.stats.totalFileBytes ?? needed) - min(dry.stats.totalFileBytes ?? needed, needed),
            availableBytes: available, requiredBytes: required)
        onEvent(.precheck(check))
        guard check.fits else {
            throw MusterError(
                .invalidInput,
                "not enough space at '\(spec.destination)': the copy needs \(Self.format(required)) but only "
                    + "\(Self.format(available)) is free", hint: "free space or use a bigger volume; nothing was copied"
            )
        }
        let outcome = try await rsync.run(
            arguments: arguments + [source, destination], interval: progressInterval, logger: logger
        ) { onEvent(.progress($0)) }
        let status = outcome.status
        return Report(
            spec: spec, dryRun: false, precheck: check, exitCode: status.code, severity: status.severity,
            message: status.message(), hint: status.hint, failedFiles: status.failedFiles,
            vanishedFiles: status.vanishedFiles, destinationFull: status.destinationFull, stats: outcome.stats,
            lastProgress: outcome.lastProgress, progressRecords: outcome.progressRecords,
            progressCallbacks: outcome.progressCallbacks, verification: nil,
            elapsedSeconds: Self.seconds(ContinuousClock.now - started))
    }
}
