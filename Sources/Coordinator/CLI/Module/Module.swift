import ArgumentParser

extension Muster {
    /// `muster module …`: build (and later publish, attach, detach) modules.
    struct Module: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "module", abstract: "Build and manage modules (composefs-style images run as systemd units).",
            subcommands: [ModuleBuild.self, ModuleVerify.self])
    }
}
