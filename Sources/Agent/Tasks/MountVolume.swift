import Foundation
import Shared

/// `mountVolume`: writes the volume's `.mount` unit, starts it and checks it (``VolumeManager/mount(_:)``).
///
/// Spec: a ``VolumeSpec`` (`{"name", "type": "nfs|nfs4|bind", "server", "source", "options": [], "mountPath"}`).
/// Result: the ``VolumeStatus``. Running it twice leaves one unit and one mount.
struct MountVolume: TaskHandler {
    let volumes: VolumeManager

    func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let volume: VolumeSpec
        do {
            volume = try spec.decode(VolumeSpec.self)
        } catch {
            throw TaskFailure(
                code: .invalidInput,
                message: "the mountVolume spec must look like {\"name\": …, \"type\": \"nfs4\", \"server\": …, "
                    + "\"source\": \"/export\", \"options\": [], \"mountPath\": \"/mnt/…\"}: \(error)")
        }
        return try JSONValue(encoding: try await volumes.mount(volume))
    }
}

/// `unmountVolume`: stops and removes the volume's unit (``VolumeManager/unmount(_:)``); a volume that is not
/// mounted here is a no-op success. Spec: `{"name": …, "mountPath": …}`. Result: `{"removed": true|false}`.
struct UnmountVolume: TaskHandler {
    let volumes: VolumeManager

    func run(spec: JSONValue, progress: TaskProgressReporter) async throws -> JSONValue {
        let volume: UnmountVolumeSpec
        do {
            volume = try spec.decode(UnmountVolumeSpec.self)
        } catch {
            throw TaskFailure(
                code: .invalidInput,
                message: "the unmountVolume spec must look like {\"name\": …, \"mountPath\": \"/mnt/…\"}: \(error)")
        }
        let removed = try await volumes.unmount(volume)
        return .object([
            "removed": .bool(removed), "name": .string(volume.name), "mountPath": .string(volume.mountPath),
        ])
    }
}
