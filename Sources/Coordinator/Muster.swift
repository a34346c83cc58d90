import ArgumentParser
import Foundation
import Shared

/// `muster`: the coordinator daemon (`serve`) and the admin CLI. Parses, dispatches, and maps a
/// ``MusterError`` to its message and exit code.
@main
struct Muster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "muster", abstract: "Muster coordinator and admin CLI.", version: MusterVersion.current,
        subcommands: [
                Serve.self, Token.self, Nodes.self, Tasks.self, Module.self, Volume.self, Sync.self, SeedCluster.self,
                Workflow.self, Cluster.self,
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
