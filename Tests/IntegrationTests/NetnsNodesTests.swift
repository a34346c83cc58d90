import Foundation
import TestSupport
import Testing

/// The harness itself: namespaces get their addresses, reach the coordinator's bridge address over TCP, and are
/// gone after teardown.
@Suite("netns harness", .serialized, .requiresRoot, .requiresNetns)
struct NetnsNodesTests {
    @Test("nodes reach the bridge address over TCP and teardown removes everything")
    func upReachDown() async throws {
        let set = try NetnsNodes.up(count: 2)
        var removed = false
        defer { if !removed { set.down() } }

        #expect(set.hostAddress.hasPrefix("10.77.0."))
        #expect(Set(set.nodes.map(\.address)).count == 2)
        for node in set.nodes {
            #expect(FileManager.default.fileExists(atPath: "/run/netns/\(node.netns)"))
            let addr = try await runCommand(NetnsNodes.ipTool, ["-n", node.netns, "-4", "-o", "addr", "show", "eth0"])
            #expect(addr.stdout.contains(" \(node.address)/27 "), "\(addr.stdout)")
        }

        // A listener on the host's bridge address, a client inside each namespace.
        let port = try PostgresHarness.freePort()
        let scratch = try ScratchDirectory("netns")
        defer { scratch.remove() }
        let server = try ChildProcess.spawn(
            name: "listener", path: "/usr/bin/python3",
            arguments: [
                "-c",
                """
                import socket
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("\(set.hostAddress)", \(port))); s.listen(8); print("listening", flush=True)
                for _ in range(\(set.nodes.count)):
                    c, a = s.accept(); c.sendall(a[0].encode()); c.close()
                """,
            ],
            logPath: "\(scratch.path)/listener.log")
        defer { server.killAndReap() }
        try await eventually("the listener to be up") {
            (try? String(contentsOfFile: server.logPath, encoding: .utf8))?.contains("listening") == true ? true : nil
        }
        for node in set.nodes {
            let client = try await runCommand(
                "/usr/bin/python3",
                [
                    "-c",
                    "import socket; s = socket.create_connection((\"\(set.hostAddress)\", \(port)), 5); "
                        + "print(s.recv(100).decode())",
                ], netns: node.netns)
            #expect(client.status == 0, "\(client.stderr)")
            // The listener saw the connection come from the node's own address: a separate host.
            #expect(client.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == node.address)
        }

        set.down()
        removed = true
        for node in set.nodes {
            #expect(!FileManager.default.fileExists(atPath: "/run/netns/\(node.netns)"))
        }
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(set.bridge)"))
    }
}
