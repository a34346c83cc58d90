import ArgumentParser

extension Muster {
    /// `muster module …`: build, verify, publish, list, attach and detach modules.
    struct Module: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "module", abstract: "Build and manage modules (composefs-style images run as systemd units).",
            subcommands: [
                ModuleBuild.self, ModuleVerify.self, ModulePublish.self, ModuleList.self, ModuleAttach.self,
                ModuleDetach.self,
            ])
    }
}
