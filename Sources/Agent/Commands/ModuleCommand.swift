import ArgumentParser
import Foundation
import Logging
import Shared

/// `muster-agent module install|attach|detach|status`: the node side of modules, by hand (the coordinator's tasks
/// do the same through the running agent). Results are JSON on stdout.
struct ModuleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "module", abstract: "Install, attach and detach modules on this node by hand.",
        subcommands: [Install.self, Attach.self, Detach.self, Status.self])

    /// `muster-agent module install DIR`: copies a build output (`muster module build -o DIR`) into the store.
    struct Install: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a module build output into this node's store; prints its image digest.")

        @Argument(help: "The output directory of `muster module build`.")
        var directory: String

        @OptionGroup var common: CommonOptions

        func run() async throws {
            let configuration = try common.configuration()
            let descriptor = try NodeModuleStore(stateDirectory: configuration.stateDirectory).install(
                bundle: ModuleBundle(directory: directory))
            let payload = descriptor.payload
            try ModuleCommand.printJSON(
                [
                    "module": payload.manifest.name, "version": payload.manifest.version,
                    "imageDigest": payload.image.digest,
                ])
        }
    }

    /// `muster-agent module attach IMAGE-DIGEST`.
    struct Attach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify, mount and start a stored module version (by image digest).")

        @Argument(help: "The image digest (as printed by `module install`).")
        var imageDigest: String

        @OptionGroup var common: CommonOptions
        @OptionGroup var moduleOptions: ModuleOptions

        func run() async throws {
            let attacher = try await ModuleCommand.attacher(common: common, moduleOptions: moduleOptions)
            try ModuleCommand.printJSON(try await attacher.attach(imageDigest: imageDigest))
        }
    }

    /// `muster-agent module detach NAME`.
    struct Detach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop and remove a module's units, unmount it and collect unreferenced objects.")

        @Argument(help: "The module name.")
        var module: String

        @OptionGroup var common: CommonOptions
        @OptionGroup var moduleOptions: ModuleOptions

        func run() async throws {
            let attacher = try await ModuleCommand.attacher(common: common, moduleOptions: moduleOptions)
            try ModuleCommand.printJSON(try await attacher.detach(module: module))
        }
    }

    /// `muster-agent module status`.
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The attached modules' units with their states, read over D-Bus.")

        @OptionGroup var common: CommonOptions
        @OptionGroup var moduleOptions: ModuleOptions

        func run() async throws {
            let attacher = try await ModuleCommand.attacher(common: common, moduleOptions: moduleOptions)
            try ModuleCommand.printJSON(await attacher.attachedUnits())
        }
    }

    static func attacher(common: CommonOptions, moduleOptions: ModuleOptions) async throws -> ModuleAttacher {
        let logger = common.bootstrapLogging()
        var configuration = try common.configuration()
        configuration.modules = moduleOptions.modules
        guard let attacher = try await AgentServices.makeModuleAttacher(configuration: configuration, logger: logger)
        else {
            throw MusterError(
                .notFound,
                "no module signing key: \(TrustedModuleKeys.defaultPath(stateDirectory: configuration.stateDirectory)) does not exist",
                hint: "pass --module-key PATH (an Ed25519 public key PEM)")
        }
        return attacher
    }

    static func printJSON<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        do {
            print(String(decoding: try encoder.encode(value), as: UTF8.self))
        } catch {
            throw MusterError(.internal, "cannot encode the result: \(error)", cause: UnderlyingError(error))
        }
    }
}
