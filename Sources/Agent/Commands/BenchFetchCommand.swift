import ArgumentParser
import Foundation
import Logging
import Shared

/// `muster-agent bench-fetch --image DIGEST`: one module fetch over a real session, for `scripts/bench-transfer`
/// (hidden).
///
/// Opens the node's session like `muster-agent run` (mutual TLS, `hello`, heartbeats) but runs no tasks; fetches
/// what the node lacks of the module whose image is DIGEST into `<state-dir>/modules` with the real
/// ``ModuleFetcher``, prints the fetch report as JSON on stdout and exits.
struct BenchFetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-fetch", abstract: "Benchmark: fetch one published module over the session.",
        shouldDisplay: false)

    @Option(name: .long, help: "Image digest of a published module.")
    var image: String

    @Option(name: .long, help: "The module's name (lets the descriptor travel as a delta against an earlier version).")
    var module: String?

    @Option(name: .long, help: "Requests outstanding at once.")
    var window: Int = 16

    @Option(name: .long, help: "Bytes per request.")
    var chunkSize: Int = 1 << 20

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let logger = common.bootstrapLogging()
        let configuration = try common.configuration()
        let stateDirectory = configuration.stateDirectory
        _ = try NodeIdentity.load(stateDirectory: stateDirectory)
        let objects = ObjectTransport()
        let session = CoordinatorSession(
            configuration: .init(stateDirectory: stateDirectory, maxFrameBytes: configuration.maxFrameBytes),
            objects: objects, logger: logger)
        let fetcher = ModuleFetcher(
            stateDirectory: stateDirectory, transport: objects,
            configuration: .init(window: window, chunkSize: chunkSize),
            trustedKeys: { [try ModuleKeyFile.load(stateDirectory: stateDirectory)] }, logger: logger)
        let image = self.image
        let module = self.module
        let report = try await withThrowingTaskGroup(of: ModuleFetcher.Report?.self) { group in
            group.addTask {
                try await session.run()
                return nil
            }
            group.addTask {
                try await objects.waitForSession(limit: .seconds(60))
                return try await fetcher.fetch(imageDigest: image, module: module).report
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let next { return next }
            }
            throw MusterError(.connectionFailed, "the session ended before the fetch finished")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }
}
