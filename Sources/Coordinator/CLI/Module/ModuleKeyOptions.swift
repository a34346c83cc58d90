import ArgumentParser
import Foundation

/// `--state-dir D | --key PATH`: where the module signing key comes from.
struct ModuleKeyOptions: ParsableArguments {
    @Option(
        name: .customLong("state-dir"),
        help: """
            Coordinator state directory whose pki/module-signing.key is used \
            (default: $MUSTER_STATE_DIR, then /var/lib/muster).
            """)
    var stateDirectory: String?

    @Option(name: .customLong("key"), help: "Use this Ed25519 PKCS#8 PEM key instead of the state directory's.")
    var keyFile: String?

    static let defaultStateDirectory = "/var/lib/muster"

    func validate() throws {
        if stateDirectory != nil && keyFile != nil {
            throw ValidationError("pass either --state-dir or --key, not both")
        }
    }

    /// Loads the key the options name.
    ///
    /// - Throws: `MusterError` `.notFound` / `.invalidInput` from ``DescriptorSigner/load(keyFile:)``.
    func loadSigner() throws -> DescriptorSigner {
        if let keyFile { return try DescriptorSigner.load(keyFile: keyFile) }
        let state =
            stateDirectory ?? ProcessInfo.processInfo.environment["MUSTER_STATE_DIR"] ?? Self.defaultStateDirectory
        return try DescriptorSigner.load(stateDirectory: state)
    }
}
