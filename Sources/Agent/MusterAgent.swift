import ArgumentParser
import Foundation
import Shared

/// `muster-agent`: parses the command line and maps `MusterError` to a message and exit code.
@main
struct MusterAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "muster-agent", abstract: "Muster node agent.", version: MusterVersion.current,
        subcommands: [
            JoinCommand.self, RunCommand.self, ModuleCommand.self, VolumeCommand.self, SyncCommand.self,
            MigrateSQLiteCommand.self, BenchSessionsCommand.self, BenchFetchCommand.self,
        ])

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as MusterError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            Foundation.exit(error.code.exitCode)
        } catch {
            exit(withError: error)
        }
    }
}
