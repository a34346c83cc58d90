import Foundation
import Shared
import Testing

@testable import Agent

@Suite("Health and host facts from the real /proc")
struct HealthCollectorTests {
    @Test func collectsFromTheRunningHost() {
        let now = Date()
        let report = HealthCollector(stateDirectory: NSTemporaryDirectory()).collect(now: now)
        #expect(report.load.count == 3)
        #expect(report.load.allSatisfy { $0 >= 0 })
        #expect(report.memoryTotalBytes > 0)
        #expect(report.memoryAvailableBytes > 0)
        #expect(report.memoryAvailableBytes <= report.memoryTotalBytes)
        #expect(report.diskTotalBytes > 0)
        #expect(report.diskFreeBytes <= report.diskTotalBytes)
        #expect(report.uptimeSeconds > 0)
        #expect(report.clock == now)
        #expect(!report.agentVersion.isEmpty)
    }

    @Test func parsers() {
        #expect(HealthCollector.parseLoadAverage("0.52 0.58 0.59 1/467 12345\n") == [0.52, 0.58, 0.59])
        let mem = HealthCollector.parseMemInfo("MemTotal:       4000 kB\nMemFree:  1 kB\nMemAvailable:   3000 kB\n")
        #expect(mem.total == 4000 * 1024)
        #expect(mem.available == 3000 * 1024)
        #expect(HealthCollector.parseUptime("12345.67 23456.78\n") == 12345.67)
        #expect(HealthCollector.parseUptime("") == nil)
    }

    @Test func missingDiskPathGivesZeroNotACrash() {
        let report = HealthCollector(stateDirectory: "/nonexistent/\(UUID())").collect()
        #expect(report.diskTotalBytes == 0)
    }

    @Test func hostFacts() {
        let facts = HostFactsCollector.collect()
        #expect(!facts.hostname.isEmpty)
        #expect(!facts.kernel.isEmpty)
        #expect(facts.cpuCount > 0)
        #expect(facts.memoryBytes > 0)
        #expect(
            HostFactsCollector.prettyName("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                == "Debian GNU/Linux 12 (bookworm)")
    }
}
