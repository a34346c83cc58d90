import ArgumentParser
import NIOHTTP1
import Foundation
import Shared

extension Muster {
    /// `muster nodes forget ID`: revokes the node's certificates; it may not reconnect.
    struct NodesForget: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "forget",
            abstract: "Forget a node: revoke its certificates and refuse its sessions (a reinstalled host joins anew).")

        @Argument(help: "The node id.")
        var id: String

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            guard UUID(uuidString: id) != nil else {
                throw MusterError(.usage, "'\(id)' is not a node id (a UUID)", hint: "`muster nodes` lists them")
            }
            let node = try await client.client().send(.DELETE, "/v1/nodes/\(id)", as: NodeView.self)
            if output.json || output.quiet {
                print(try Output.render(.node(node), options: output))
            } else {
                print("node \(node.id.uuidString.lowercased()) (\(node.hostname)) forgotten; its certificates are revoked")
            }
        }
    }
}
