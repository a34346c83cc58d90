import ArgumentParser
import Foundation
import Shared

extension Muster {
    /// `muster module verify OUT [--state-dir D | --key PATH] [--json]`.
    struct ModuleVerify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check a built module: signature, image digest and every object's content.",
            discussion: """
                Verifies OUT/descriptor.json against the module signing key (the public half of --key or of
                <state-dir>/pki/module-signing.key), that OUT/meta.erofs is the signed image, and re-hashes
                every object in OUT/objects. Exit codes: 0 intact, 1 refused, 2 usage.
                """)

        @Argument(help: "A `muster module build` output directory.")
        var directory: String

        @OptionGroup var key: ModuleKeyOptions

        @Flag(help: "Print the result (or the error) as JSON.")
        var json = false

        struct Summary: Codable, Equatable {
            var name: String
            var version: String
            var imageDigest: String
            var objects: Int
            var objectBytes: UInt64
            var keyID: String
        }

        func run() async throws {
            do {
                let summary = try verify()
                if json {
                    print(try ModuleOutput.jsonString(summary))
                } else {
                    print(
                        "\(summary.name)@\(summary.version): signature, image and \(summary.objects) objects "
                            + "(\(summary.objectBytes) bytes) verified")
                }
            } catch {
                throw ModuleOutput.report(error, json: json)
            }
        }

        /// The check itself, without printing (tests call this).
        func verify() throws -> Summary {
            let signer = try key.loadSigner()
            let payload = try ModuleBundle(directory: directory).verify(trustedKeys: [signer.publicKey])
            return Summary(
                name: payload.manifest.name, version: payload.manifest.version, imageDigest: payload.image.digest,
                objects: payload.objects.count, objectBytes: payload.totalObjectBytes, keyID: signer.keyID)
        }
    }
}
