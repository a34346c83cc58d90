import ArgumentParser
import Foundation
import Logging
import Shared

/// `muster-agent volume mount|unmount|status`: what the `mountVolume` / `unmountVolume` tasks and the health
/// report do, run by hand on the node (no coordinator needed). Output is JSON on stdout; failures print
/// `{"error": {"code", "message", "details"}}` and exit 1 (2 for invalid input).
struct VolumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume", abstract: "Mount, unmount and check volumes on this node (as the tasks do).",
        subcommands: [Mount.self, Unmount.self, Status.self])

    struct Mount: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the volume's .mount unit, start it, check mounted/writable/free space.")

        @OptionGroup var common: CommonOptions
        @OptionGroup var systemdOptions: ModuleOptions

        @Option(
            help: #"The volume as JSON: {"name", "type": "nfs|nfs4|bind", "server", "source", "options", "mountPath"}."#
        )
        var spec: String

        func run() async throws {
            let volumes = try VolumeCommand.manager(common, systemdOptions)
            try await VolumeCommand.report {
                let value = try WireCoding.makeDecoder().decode(VolumeSpec.self, from: Data(spec.utf8))
                return try JSONValue(encoding: try await volumes.mount(value))
            }
        }
    }

    struct Unmount: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop and remove the volume's .mount unit (nothing to do when it is not mounted).")

        @OptionGroup var common: CommonOptions
        @OptionGroup var systemdOptions: ModuleOptions

        @Option(help: "Volume name.")
        var name: String

        @Option(help: "Mount path.")
        var mountPath: String

        func run() async throws {
            let volumes = try VolumeCommand.manager(common, systemdOptions)
            try await VolumeCommand.report {
                let removed = try await volumes.unmount(UnmountVolumeSpec(name: name, mountPath: mountPath))
                return .object(["removed": .bool(removed)])
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The status of every volume unit Muster wrote here (as in the health report).")

        @OptionGroup var common: CommonOptions
        @OptionGroup var systemdOptions: ModuleOptions

        func run() async throws {
            let volumes = try VolumeCommand.manager(common, systemdOptions)
            try await VolumeCommand.report { try JSONValue(encoding: await volumes.statuses()) }
        }
    }

    static func manager(_ common: CommonOptions, _ systemd: ModuleOptions) throws -> VolumeManager {
        let logger = common.bootstrapLogging()
        var configuration = try common.configuration()
        configuration.modules = systemd.modules
        return AgentServices.volumeManager(configuration: configuration, logger: logger)
    }

    /// Prints the value or the error as JSON; exit 1 on failure, 2 on invalid input.
    static func report(_ body: () async throws -> JSONValue) async throws {
        let failure: TaskFailure
        do {
            print(try await body().jsonText)
            return
        } catch let error as TaskFailure {
            failure = error
        } catch let error as MusterError {
            failure = TaskFailure(code: error.code, message: error.message + (error.hint.map { " (\($0))" } ?? ""))
        } catch let error as DecodingError {
            failure = TaskFailure(code: .invalidInput, message: "the volume spec is not valid JSON: \(error)")
        } catch {
            failure = TaskFailure(code: .internal, message: "\(error)")
        }
        let body = try JSONValue(encoding: ["error": failure])
        print(body.jsonText)
        throw ExitCode(
            failure.code == MusterError.Code.invalidInput.wireName || failure.code == MusterError.Code.usage.wireName
                ? 2 : 1)
    }
}
