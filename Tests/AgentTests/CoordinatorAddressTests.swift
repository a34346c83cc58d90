import Shared
import Testing

@testable import Agent

@Suite("Coordinator address and duration arguments")
struct CoordinatorAddressTests {
    @Test func parses() throws {
        #expect(try CoordinatorAddress(parsing: "10.0.0.1:7500") == CoordinatorAddress(host: "10.0.0.1", port: 7500))
        #expect(
            try CoordinatorAddress(parsing: "coord.example") == CoordinatorAddress(host: "coord.example", port: 7400))
        #expect(try CoordinatorAddress(parsing: "[::1]:7401") == CoordinatorAddress(host: "::1", port: 7401))
        #expect(try CoordinatorAddress(parsing: "::1") == CoordinatorAddress(host: "::1", port: 7400))
        #expect(CoordinatorAddress(host: "::1", port: 1).description == "[::1]:1")
    }

    @Test(arguments: ["", ":7400", "host:0", "host:99999", "host:abc", "[::1"])
    func rejects(_ text: String) {
        #expect { try CoordinatorAddress(parsing: text) } throws: { ($0 as? MusterError)?.code == .usage }
    }

    @Test func durations() throws {
        #expect(try DurationArgument.parse("200ms", option: "x") == .milliseconds(200))
        #expect(try DurationArgument.parse("1.5s", option: "x") == .milliseconds(1500))
        #expect(try DurationArgument.parse("5m", option: "x") == .seconds(300))
        #expect(try DurationArgument.parse("1h", option: "x") == .seconds(3600))
        #expect { try DurationArgument.parse("soon", option: "--x") } throws: { ($0 as? MusterError)?.code == .usage }
    }
}
