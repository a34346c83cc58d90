import Foundation
import Testing

/// Prerequisites as traits. Outside CI a missing prerequisite skips the test with a message; with `CI=true`
/// the test runs anyway and fails, because a CI run that skipped them is not green (TESTING.md).
public enum Prerequisites {
    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }
    public static var isRoot: Bool { getuid() == 0 }
    public static var hasSystemd: Bool { FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd") }
    public static var hasNetns: Bool { isRoot && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip") && isRoot }
}

extension Trait where Self == ConditionTrait {
    /// The test needs root (network namespaces, mounts, runuser).
    public static var requiresRoot: Self {
        .enabled(if: Prerequisites.isCI || Prerequisites.isRoot, "requires root")
    }
    /// The test needs a systemd binary to boot a private manager.
    public static var requiresSystemd: Self {
        .enabled(if: Prerequisites.isCI || (Prerequisites.isRoot && Prerequisites.hasSystemd), "requires root and systemd")
    }
    /// The test needs `ip netns` (root + iproute2).
    public static var requiresNetns: Self {
        .enabled(if: Prerequisites.isCI || Prerequisites.hasNetns, "requires root and iproute2 for network namespaces")
    }
}
