#if canImport(CoreFoundation)
    // With MemberImportVisibility, members of glibc structs (stat, dirent, sockaddr, passwd, statvfs) may resolve to
    // CoreFoundation's copy of the headers depending on build order, so that module is imported explicitly.
    import CoreFoundation
#endif
import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Reads the host's health for heartbeats from `/proc` and `statvfs` (DESIGN §9; first report: load, memory,
/// disk of the state dir, uptime, agent version).
public struct HealthCollector: Sendable {
    public var stateDirectory: String
    public var procRoot: String
    /// The attached modules' units (``ModuleAttacher/attachedUnits()``), when the agent attaches modules.
    public var units: (@Sendable () async -> [UnitStatus])?

    public init(
        stateDirectory: String, procRoot: String = "/proc", units: (@Sendable () async -> [UnitStatus])? = nil
    ) {
        self.stateDirectory = stateDirectory
        self.procRoot = procRoot
        self.units = units
    }

    /// ``collect(now:)`` plus the attached units' states (read over D-Bus) when there is a unit source.
    public func report(now: Date = Date()) async -> HealthReport {
        var report = collect(now: now)
        if let units { report.units = await units() }
        return report
    }

    /// A report as of now. Values that cannot be read are 0 (the report still goes out).
    public func collect(now: Date = Date()) -> HealthReport {
        let load =
            (try? String(contentsOfFile: "\(procRoot)/loadavg", encoding: .utf8)).map(Self.parseLoadAverage) ?? []
        let memory = (try? String(contentsOfFile: "\(procRoot)/meminfo", encoding: .utf8)).map(Self.parseMemInfo)
        let uptime = (try? String(contentsOfFile: "\(procRoot)/uptime", encoding: .utf8)).flatMap(Self.parseUptime)
        let disk = Self.diskUsage(path: stateDirectory)
        return HealthReport(
            load: load, memoryTotalBytes: memory?.total ?? 0, memoryAvailableBytes: memory?.available ?? 0,
            diskTotalBytes: disk?.total ?? 0, diskFreeBytes: disk?.free ?? 0, uptimeSeconds: uptime ?? 0,
            agentVersion: MusterVersion.current, clock: now)
    }

    /// `/proc/loadavg`: "0.52 0.58 0.59 1/467 12345" → [0.52, 0.58, 0.59].
    static func parseLoadAverage(_ text: String) -> [Double] {
        Array(text.split(separator: " ").prefix(3).compactMap { Double($0) })
    }

    /// `/proc/meminfo`: MemTotal and MemAvailable, in bytes.
    static func parseMemInfo(_ text: String) -> (total: UInt64, available: UInt64) {
        var total: UInt64 = 0
        var available: UInt64 = 0
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let kib = UInt64(parts[1]) else { continue }
            switch parts[0] {
            case "MemTotal:": total = kib * 1024
            case "MemAvailable:": available = kib * 1024
            default: continue
            }
        }
        return (total, available)
    }

    /// `/proc/uptime`: "12345.67 23456.78" → 12345.67.
    static func parseUptime(_ text: String) -> Double? {
        text.split(separator: " ").first.flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    static func diskUsage(path: String) -> (total: UInt64, free: UInt64)? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        let block = UInt64(info.f_frsize)
        return (UInt64(info.f_blocks) * block, UInt64(info.f_bavail) * block)
    }
}
