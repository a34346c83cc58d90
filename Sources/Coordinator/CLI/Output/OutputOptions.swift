import Foundation
import ArgumentParser

/// Output flags shared by every CLI command.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON (sorted keys, ISO-8601 dates) instead of a table.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print only the essential value (ids, the token).")
    var quiet = false
}

/// Where the CLI finds the coordinator (shared by the admin commands).
struct ClientOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "State directory of the coordinator (reads admin.json there). Default: $MUSTER_STATE_DIR, else ~/.config/muster.")
    var stateDir: String?

    func client() throws -> AdminClient {
        AdminClient(
            configuration: try AdminClientConfiguration.locate(
                stateDirectory: stateDir, environment: ProcessInfo.processInfo.environment))
    }
}
