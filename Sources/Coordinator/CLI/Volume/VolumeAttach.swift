import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

/// Node selection and waiting, shared by `attach` and `detach`.
struct VolumeTargetOptions: ParsableArguments {
    @Option(help: "Node id (repeatable).")
    var node: [String] = []

    @Flag(help: "Every node (attach: all nodes that are not forgotten; detach: every node it is attached to).")
    var all = false

    @Flag(help: "Wait until the tasks finished; exit 1 when one failed.")
    var wait = false

    @Option(help: "With --wait: give up waiting after this long (e.g. 30s, 5m).")
    var timeout = "5m"

    func request() throws -> VolumeTargetRequest {
        switch (node.isEmpty, all) {
        case (false, false): return VolumeTargetRequest(nodes: node)
        case (true, true): return VolumeTargetRequest(all: true)
        default: throw MusterError(.usage, "give either --node ID (repeatable) or --all")
        }
    }

    /// Sends the change, optionally waits for its tasks, prints the outcome.
    func run(_ action: String, name: String, client: ClientOptions, output: OutputOptions) async throws {
        let admin = try client.client()
        var changes = try await admin.send(
            .POST, "/v1/volumes/\(name)/\(action)", body: try request(), as: [VolumeChange].self)
        if wait {
            let limit = try CoordinatorConfiguration.duration(timeout, key: "--timeout")
            let deadline = ContinuousClock.now + limit
            for index in changes.indices {
                while var task = changes[index].task, !task.state.isFinal {
                    guard ContinuousClock.now < deadline else {
                        throw MusterError(
                            .timeout,
                            "task \(task.id.uuidString.lowercased()) is still \(task.state.rawValue) after \(timeout)")
                    }
                    try await Task.sleep(for: .milliseconds(250))
                    task = try await admin.send(
                        .GET, "/v1/tasks/\(task.id.uuidString.lowercased())", as: TaskRecord.self)
                    changes[index].task = task
                }
            }
        }
        print(try VolumeOutput.render(.changes(changes), options: output))
        let failed = changes.compactMap(\.task).filter { $0.state == .failed || $0.state == .cancelled }
        if wait, let first = failed.first {
            throw MusterError(
                .internal,
                "\(failed.count) of \(changes.count) \(action) tasks failed; first: \(first.error?.message ?? "no error recorded")",
                hint: "`muster tasks show \(first.id.uuidString.lowercased())` has the details")
        }
    }
}

extension Muster {
    /// `muster volume attach NAME --node ID|--all [--wait]`.
    struct VolumeAttach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "attach", abstract: "Mount a volume on nodes (a mountVolume task per node).")

        @Argument(help: "Volume name.")
        var name: String

        @OptionGroup var target: VolumeTargetOptions
        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try await target.run("attach", name: name, client: client, output: output)
        }
    }

    /// `muster volume detach NAME --node ID|--all [--wait]`.
    struct VolumeDetach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "detach",
            abstract: "Unmount a volume from nodes (an unmountVolume task per node; not attached = nothing to do).")

        @Argument(help: "Volume name.")
        var name: String

        @OptionGroup var target: VolumeTargetOptions
        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try await target.run("detach", name: name, client: client, output: output)
        }
    }
}
