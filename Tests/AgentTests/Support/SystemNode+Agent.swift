import Foundation
import TestSupport

@testable import Agent

extension SystemNode {
    /// The node's system bus, as the agent's ``SDBus`` connects to it.
    var busAddress: SDBus.Address { .bus(busAddressString) }

    /// Runs `argv` inside the node (its PID, mount, UTS and network namespaces) to completion.
    func exec(_ argv: [String]) throws -> CommandOutput {
        guard let initPID else { throw UserManagerError("node \(name) has no PID 1") }
        var flags = ["-t", "\(initPID)", "-m", "-p", "-u"]
        if netns != nil { flags.append("-n") }
        return try runCommand("/usr/bin/nsenter", flags + argv)
    }
}
