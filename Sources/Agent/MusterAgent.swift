import ArgumentParser
import Shared

@main
struct MusterAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "muster-agent", abstract: "Muster node agent.", version: MusterVersion.current,
        subcommands: [MigrateSQLiteCommand.self])
}
