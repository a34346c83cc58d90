import Foundation
import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Collects ``HostFacts`` for the join request.
public enum HostFactsCollector {
    public static func collect(etcRoot: String = "/etc", procRoot: String = "/proc") -> HostFacts {
        let machineID =
            (try? String(contentsOfFile: "\(etcRoot)/machine-id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        let os = (try? String(contentsOfFile: "\(etcRoot)/os-release", encoding: .utf8)).flatMap(prettyName) ?? "Linux"
        let memory =
            (try? String(contentsOfFile: "\(procRoot)/meminfo", encoding: .utf8))
            .map { HealthCollector.parseMemInfo($0).total } ?? ProcessInfo.processInfo.physicalMemory
        return HostFacts(
            hostname: hostname(), machineID: machineID, os: os, kernel: kernelRelease(),
            cpuCount: ProcessInfo.processInfo.activeProcessorCount, memoryBytes: memory,
            agentVersion: MusterVersion.current)
    }

    /// `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"` → `Debian GNU/Linux 12 (bookworm)`.
    static func prettyName(_ osRelease: String) -> String? {
        for line in osRelease.split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
            var value = line.dropFirst("PRETTY_NAME=".count)
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = value.dropFirst().dropLast() }
            return String(value)
        }
        return nil
    }

    static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func kernelRelease() -> String {
        var names = utsname()
        guard uname(&names) == 0 else { return "" }
        return withUnsafeBytes(of: &names.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
