import ArgumentParser
import Foundation
import Logging
import Shared

extension Muster {
    /// `muster module build DIR [-o OUT] [--state-dir D | --key PATH] [--json]`.
    struct ModuleBuild: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "build",
            abstract:
                "Build a module directory into content-addressed objects, an EROFS image and a signed descriptor.",
            discussion: """
                DIR holds module.yaml and rootfs/ (the files; exec: [/bin/server] means rootfs/bin/server).
                OUT receives objects/, meta.erofs and descriptor.json; objects already in OUT are reused, so
                building several versions into one OUT stores shared files once. Building the same input twice
                gives the same image digest and descriptor. Needs root (trusted.* xattrs) and mkfs.erofs
                (erofs-utils). See docs/modules.md.

                Exit codes: 0 built, 1 invalid module or build failure, 2 usage.
                """)

        @Argument(help: "The module directory (module.yaml + rootfs/).")
        var directory: String

        @Option(name: [.short, .customLong("output")], help: "Output directory (default: ./NAME-VERSION.module).")
        var output: String?

        @OptionGroup var key: ModuleKeyOptions

        @Flag(help: "Print the result (or the error with every problem) as JSON.")
        var json = false

        @Flag(name: .customLong("verbose"), help: "Log build steps to stderr.")
        var verbose = false

        func run() async throws {
            do {
                let result = try await build()
                print(try Self.render(result, json: json))
            } catch {
                throw ModuleOutput.report(error, json: json)
            }
        }

        /// The build itself, without printing (tests call this).
        func build() async throws -> ModuleBuilder.Result {
            var logger = Logger(label: "muster.module.build")
            logger.logLevel = verbose ? .debug : .warning
            let signer = try key.loadSigner()
            let outputDirectory: String
            if let output {
                outputDirectory = output
            } else {
                // Name the default output after the module; validation runs again in build().
                let (manifest, _) = try ModuleBuilder.load(moduleDirectory: ModuleBuilder.standardized(directory))
                outputDirectory = "\(manifest.name)-\(manifest.version).module"
            }
            return try await ModuleBuilder(logger: logger).build(
                moduleDirectory: directory, outputDirectory: outputDirectory, signer: signer)
        }

        // MARK: - Output

        struct Summary: Codable, Equatable {
            var name: String
            var version: String
            var output: String
            var descriptor: String
            var imageDigest: String
            var imageSize: UInt64
            var objects: Int
            var objectBytes: UInt64
            var newObjects: Int
            var reusedObjects: Int
            var keyID: String
        }

        static func summary(_ result: ModuleBuilder.Result) -> Summary {
            let payload = result.descriptor.payload
            let layout = ModuleBundle(directory: result.outputDirectory)
            return Summary(
                name: payload.manifest.name, version: payload.manifest.version, output: result.outputDirectory,
                descriptor: layout.descriptorPath, imageDigest: payload.image.digest, imageSize: payload.image.size,
                objects: payload.objects.count, objectBytes: payload.totalObjectBytes, newObjects: result.newObjects,
                reusedObjects: result.reusedObjects, keyID: result.descriptor.signature.keyID)
        }

        static func render(_ result: ModuleBuilder.Result, json: Bool) throws -> String {
            let summary = summary(result)
            if json { return try ModuleOutput.jsonString(summary) }
            return """
                built \(summary.name)@\(summary.version) into \(summary.output)
                  image    sha256:\(summary.imageDigest) (\(summary.imageSize) bytes)
                  objects  \(summary.objects) (\(summary.objectBytes) bytes; \(summary.newObjects) new, \(summary.reusedObjects) already present)
                  signed   by key \(summary.keyID.prefix(16))…
                """
        }
    }
}
