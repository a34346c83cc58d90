import ArgumentParser

extension Muster {
    /// `muster volume create|attach|detach|ls` (`ls` when no verb is given).
    struct Volume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "volume",
            abstract: "Define NFS and bind volumes and mount them on nodes as systemd .mount units.",
            subcommands: [VolumeCreate.self, VolumeAttach.self, VolumeDetach.self, VolumeList.self],
            defaultSubcommand: VolumeList.self)
    }
}
