import ArgumentParser
import Foundation
import Shared

extension Muster {
    /// `muster cluster apply --node N [--seed WORKFLOW] [--dry-run] [--json]`.
    struct Cluster: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cluster", abstract: "Bring joined nodes into the seeded cluster.",
            subcommands: [Apply.self])

        struct Apply: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "apply",
                abstract: "Mount the cluster's volume and attach the service's module on a joined node, then verify it.",
                discussion: """
                    Uses the profile of the newest seed-cluster workflow that succeeded (or --seed ID): its volume \
                    (registered with `muster volume create`), its module, its health URL and checks, run on the \
                    node. A workflow: a second run after success does nothing, a run after a failure resumes, \
                    `muster workflow rollback ID` detaches and unmounts. Exit codes: 0 done, 1 a step failed, \
                    2 usage.
                    """)

            @Option(help: "The joined node's id.")
            var node: String

            @Option(help: "The seed-cluster workflow whose profile to apply (default: the newest that succeeded).")
            var seed: String?

            @Flag(help: "Print the plan; change nothing.")
            var dryRun = false

            @Option(help: "Give up waiting after this long (the workflow keeps running).")
            var timeout = "2h"

            @Flag(help: "NDJSON events on stdout instead of text.")
            var json = false

            @OptionGroup var client: ClientOptions

            func run() async throws {
                let limit = try SeedCluster.checkArguments(node: node, timeout: timeout)
                let admin = try client.client()
                let response = try await admin.send(
                    .POST, "/v1/cluster/apply",
                    body: ClusterApplyPlanner.Request(node: node, seed: seed, dryRun: dryRun),
                    as: SeedPlanner.Response.self)
                if dryRun {
                    try SeedCluster.printPlan(response, json: json)
                    return
                }
                try await SeedCluster.follow(response, command: "cluster apply", admin: admin, json: json, timeout: limit)
            }
        }
    }
}
