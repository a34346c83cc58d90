import Crypto
import Foundation
import Shared

/// `muster cluster apply --node N`: gives a joined node what the seeded cluster serves — the shared volume mounted,
/// the service's module attached — and proves it with the seed profile's own health URL and checks (issue 6,
/// "join the rest"). A workflow like the seed, so it is checkpointed, resumable and rolls back (module detached,
/// volume unmounted).
public enum ClusterApplyPlanner {
    /// `POST /v1/cluster/apply` body.
    public struct Request: Codable, Sendable, Equatable {
        public var node: String
        /// The seed-cluster workflow whose profile to apply (default: the newest that succeeded).
        public var seed: String?
        public var dryRun: Bool?

        public init(node: String, seed: String? = nil, dryRun: Bool? = nil) {
            self.node = node
            self.seed = seed
            self.dryRun = dryRun
        }
    }

    public static let workflowKind = "cluster-apply"

    /// The steps: mount the volume, attach the module, wait for health, run the checks.
    /// - Parameters:
    ///   - volume: The profile's volume as registered with `muster volume create` (nil: the profile has none).
    ///   - module: The module to attach (nil: the profile names none; the service must already be on the node).
    public static func plan(profile: SeedProfile, volume: VolumeSpec?, module: AttachModuleSpec?) throws
        -> [WorkflowStep]
    {
        var steps: [WorkflowStep] = []
        if let volume {
            steps.append(
                WorkflowStep(
                    name: "mount volume \(volume.name) at \(volume.mountPath)", kind: .mountVolume,
                    spec: try JSONValue(encoding: volume), maxAttempts: 3,
                    undo: [
                        WorkflowStep(
                            name: "unmount volume \(volume.name)", kind: .unmountVolume,
                            spec: try JSONValue(
                                encoding: UnmountVolumeSpec(name: volume.name, mountPath: volume.mountPath)),
                            maxAttempts: 3, order: 1)
                    ]))
        }
        if let module {
            steps.append(
                WorkflowStep(
                    name: "attach module \(module.name)@\(module.version)", kind: .attachModule,
                    spec: try JSONValue(encoding: module), maxAttempts: 3,
                    undo: [
                        WorkflowStep(
                            name: "detach module \(module.name)", kind: .detachModule,
                            spec: try JSONValue(encoding: DetachModuleSpec(name: module.name)), maxAttempts: 3,
                            order: 0)
                    ]))
        }
        // With a module the service runs as the module's units, not as the standalone host's unit.
        steps.append(
            contentsOf: SeedPlanner.verificationSteps(
                profile: profile, unit: module.map { "module \($0.name)" } ?? profile.service.unit))
        steps[steps.count - 1].window = nil
        return steps
    }

    public static func fingerprint(nodeID: UUID, seed: UUID, steps: [WorkflowStep]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var data = Data((nodeID.uuidString + seed.uuidString).lowercased().utf8)
        data.append(try encoder.encode(steps.map { [$0.kind: $0.spec] }))
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }
}
