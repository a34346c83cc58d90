import ArgumentParser
import Foundation
import NIOHTTP1
import Shared

extension Muster {
    /// `muster volume create NAME --nfs SERVER:/EXPORT | --bind /DIR [--options …] [--mount-path P]`.
    struct VolumeCreate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Define a volume (nothing is mounted until `muster volume attach`).")

        @Argument(help: "Volume name ([a-z0-9_-], at most 64).")
        var name: String

        @Option(help: "NFS export as SERVER:/EXPORT.")
        var nfs: String?

        @Option(help: "NFS protocol version for --nfs: 4 (Type=nfs4, default) or 3 (Type=nfs).")
        var nfsVersion: Int = 4

        @Option(help: "A directory of the node to bind-mount (single host, tests).")
        var bind: String?

        @Option(
            help:
                "Mount options, comma-separated (repeatable); they replace the NFS defaults they name (hard,timeo=600,retrans=2,noresvport)."
        )
        var options: [String] = []

        @Option(help: "Where nodes mount it (default /mnt/muster/NAME).")
        var mountPath: String?

        @OptionGroup var client: ClientOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let request = try makeRequest()
            let view = try await client.client().send(.POST, "/v1/volumes", body: request, as: VolumeView.self)
            print(try VolumeOutput.render(.volume(view), options: output))
        }

        func makeRequest() throws -> CreateVolumeRequest {
            let options = self.options.flatMap { $0.split(separator: ",").map(String.init) }
            switch (nfs, bind) {
            case (let export?, nil):
                guard let colon = export.firstIndex(of: ":"), export[export.index(after: colon)...].hasPrefix("/")
                else {
                    throw MusterError(
                        .usage, "--nfs '\(export)' is not SERVER:/EXPORT", hint: "e.g. --nfs 10.0.0.5:/srv/golden")
                }
                guard nfsVersion == 3 || nfsVersion == 4 else {
                    throw MusterError(.usage, "--nfs-version must be 3 or 4")
                }
                return CreateVolumeRequest(
                    name: name, type: nfsVersion == 3 ? .nfs : .nfs4, server: String(export[..<colon]),
                    source: String(export[export.index(after: colon)...]), options: options, mountPath: mountPath)
            case (nil, let directory?):
                return CreateVolumeRequest(
                    name: name, type: .bind, source: directory, options: options, mountPath: mountPath)
            default:
                throw MusterError(.usage, "give exactly one of --nfs SERVER:/EXPORT and --bind /DIR")
            }
        }
    }
}
