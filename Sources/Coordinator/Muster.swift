import ArgumentParser
import Shared

@main
struct Muster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "muster", abstract: "Muster coordinator and admin CLI.",
        subcommands: [Module.self])
    func run() async throws { print(MusterVersion.current) }
}
