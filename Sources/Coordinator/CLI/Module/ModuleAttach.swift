import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

/// `--node ID …` / `--all` and waiting, shared by attach and detach.
struct ModuleTargetOptions: ParsableArguments {
    @Option(name: .customLong("node"), help: "A node id (repeat for several nodes).")
    var nodes: [String] = []

    @Flag(help: "Every node of the cluster (except forgotten ones).")
    var all = false

    @Flag(help: "Create the tasks and return without waiting for them.")
    var noWait = false

    @Option(help: "Give up waiting after this long (e.g. 30s, 10m).")
    var timeout = "30m"

    func validate() throws {
        if all == !nodes.isEmpty {
            throw ValidationError("pass --node ID (one or more) or --all")
        }
        for node in nodes where UUID(uuidString: node) == nil {
            throw ValidationError("--node '\(node)' is not a node id (a UUID); `muster nodes` lists them")
        }
    }
}

/// What attach and detach print.
struct ModuleTasksSummary: Codable, Equatable {
    var module: ModuleRecord?
    var tasks: [TaskRecord]
    var succeeded: Int
    var failed: Int
    var pending: Int
}

enum ModuleTaskWaiter {
    /// Polls the tasks until all finished (or the timeout), printing state changes and fetch progress to
    /// stderr unless `quiet`.
    static func wait(
        for created: [TaskRecord], client: AdminClient, timeout: String, quiet: Bool
    ) async throws -> [TaskRecord] {
        let limit = try CoordinatorConfiguration.duration(timeout, key: "--timeout")
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        var tasks = created
        var shown: [UUID: String] = [:]
        while !tasks.allSatisfy(\.state.isFinal) {
            guard clock.now < deadline else {
                let open = tasks.filter { !$0.state.isFinal }.map { $0.id.uuidString.lowercased() }
                throw MusterError(
                    .timeout, "\(open.count) task(s) still running after \(timeout): \(open.joined(separator: ", "))",
                    hint: "`muster tasks show ID` shows them later")
            }
            try await Task.sleep(for: .milliseconds(250))
            for index in tasks.indices where !tasks[index].state.isFinal {
                let task = try await client.send(
                    .GET, "/v1/tasks/\(tasks[index].id.uuidString.lowercased())", as: TaskRecord.self)
                tasks[index] = task
                let line = describe(task)
                if !quiet, shown[task.id] != line {
                    FileHandle.standardError.write(Data("\(line)\n".utf8))
                    shown[task.id] = line
                }
            }
        }
        return tasks
    }

    /// `node 3f0c1a2b: running, fetch 120.0 MiB of 512.0 MiB (40/200 files)`.
    static func describe(_ task: TaskRecord) -> String {
        var line = "node \(task.nodeID.uuidString.lowercased().prefix(8)): \(task.state.rawValue)"
        if !task.state.isFinal, case .object(let progress)? = task.progress,
            case .number(let received)? = progress["bytesReceived"], case .number(let total)? = progress["bytesToFetch"]
        {
            line += ", fetch \(Output.bytes(UInt64(received))) of \(Output.bytes(UInt64(total)))"
            if case .number(let files)? = progress["filesFetched"], case .number(let all)? = progress["filesToFetch"] {
                line += " (\(Int(files))/\(Int(all)) files)"
            }
        }
        if let error = task.error { line += ": \(error.code): \(error.message)" }
        return line
    }

    static func finish(
        module: ModuleRecord?, tasks: [TaskRecord], output: OutputOptions, verb: String
    ) throws {
        let summary = ModuleTasksSummary(
            module: module, tasks: tasks, succeeded: tasks.filter { $0.state == .succeeded }.count,
            failed: tasks.filter { $0.state == .failed || $0.state == .cancelled }.count,
            pending: tasks.filter { !$0.state.isFinal }.count)
        if output.json {
            print(try ModuleOutput.jsonString(summary))
        } else if output.quiet {
            print(tasks.map { $0.id.uuidString.lowercased() }.joined(separator: "\n"))
        } else {
            print(try Output.render(.tasks(tasks), options: output))
        }
        if summary.failed > 0 {
            throw MusterError(
                .internal, "\(verb) failed on \(summary.failed) of \(tasks.count) node(s)",
                hint: "`muster tasks show ID` shows each error")
        }
    }
}

extension Muster {
    /// `muster module attach NAME[@VERSION] --node ID… | --all [--no-wait] [--json]`.
    struct ModuleAttach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "attach",
            abstract: "Attach a published module on nodes: fetch what they lack, verify, mount, start its units.",
            discussion: """
                Creates one attachModule task per node (the newest published version without @VERSION) and waits
                for them, printing each node's state and transfer progress to stderr. Exit codes: 0 attached
                everywhere, 1 failed on a node (or module not published), 2 usage or coordinator unreachable.
                """)

        @Argument(help: "NAME or NAME@VERSION of a published module.")
        var module: String

        @OptionGroup var target: ModuleTargetOptions
        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let parts = module.split(separator: "@", maxSplits: 1).map(String.init)
            guard let name = parts.first, ModuleManifest.isSafeName(name) else {
                throw MusterError(.usage, "'\(module)' is not NAME or NAME@VERSION")
            }
            let admin = try client.client()
            let created = try await admin.send(
                .POST, "/v1/modules/attach",
                body: ModuleTasksRequest(
                    name: name, version: parts.count > 1 ? parts[1] : nil,
                    nodes: target.all ? nil : target.nodes, all: target.all ? true : nil),
                as: ModuleTasksResponse.self)
            let tasks =
                target.noWait
                ? created.tasks
                : try await ModuleTaskWaiter.wait(
                    for: created.tasks, client: admin, timeout: target.timeout, quiet: output.quiet || output.json)
            try ModuleTaskWaiter.finish(module: created.module, tasks: tasks, output: output, verb: "attach")
        }
    }

    /// `muster module detach NAME --node ID… | --all [--no-wait] [--json]`.
    struct ModuleDetach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "detach",
            abstract: "Detach a module from nodes: stop and remove its units, unmount, collect unused objects.",
            discussion: """
                Creates one detachModule task per node and waits for them. Detaching a module that is not attached
                succeeds and changes nothing. Exit codes as for attach.
                """)

        @Argument(help: "The module's name.")
        var name: String

        @OptionGroup var target: ModuleTargetOptions
        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            guard ModuleManifest.isSafeName(name) else {
                throw MusterError(.usage, "'\(name)' is not a module name")
            }
            let admin = try client.client()
            let created = try await admin.send(
                .POST, "/v1/modules/detach",
                body: ModuleTasksRequest(name: name, nodes: target.all ? nil : target.nodes, all: target.all ? true : nil),
                as: ModuleTasksResponse.self)
            let tasks =
                target.noWait
                ? created.tasks
                : try await ModuleTaskWaiter.wait(
                    for: created.tasks, client: admin, timeout: target.timeout, quiet: output.quiet || output.json)
            try ModuleTaskWaiter.finish(module: nil, tasks: tasks, output: output, verb: "detach")
        }
    }
}
