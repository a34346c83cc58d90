import ArgumentParser
import NIOHTTP1
import Foundation
import Shared

extension Muster {
    /// `muster token create [--ttl 24h] [--uses N] [--label k=v]…`: prints the join command.
    struct TokenCreate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create a join token and print the command that joins a node with it.")

        @Option(help: "How long the token is valid (e.g. 30m, 24h, 7d).")
        var ttl = "24h"

        @Option(help: "How many nodes may join with it (default: unlimited).")
        var uses: Int?

        @Option(name: .customLong("label"), help: "A label k=v every node joining with it gets (repeatable).")
        var labels: [String] = []

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let ttl = try CoordinatorConfiguration.duration(self.ttl, key: "--ttl")
            var parsed: [String: String] = [:]
            for label in labels {
                guard let eq = label.firstIndex(of: "="), eq != label.startIndex else {
                    throw MusterError(.usage, "--label '\(label)' is not k=v")
                }
                parsed[String(label[..<eq])] = String(label[label.index(after: eq)...])
            }
            let request = CreateTokenRequest(
                ttlSeconds: ttl.timeInterval, uses: uses, labels: parsed)
            let created = try await client.client().send(.POST, "/v1/tokens", body: request, as: CreatedToken.self)
            print(try Output.render(.createdToken(created), options: output))
        }
    }
}
