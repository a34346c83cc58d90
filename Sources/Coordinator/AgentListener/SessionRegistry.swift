import Foundation
import NIOCore

/// The node sessions this coordinator holds, one per node; a newer session for the same node replaces (and
/// closes) the older one, e.g. after an agent reconnected before the old TCP connection timed out.
actor SessionRegistry {
    private struct Entry {
        var connectionID: UInt64
        var channel: any Channel
    }

    private var sessions: [UUID: Entry] = [:]

    var count: Int { sessions.count }

    /// Registers a session and closes a previous one of the same node.
    func open(nodeID: UUID, connectionID: UInt64, channel: any Channel) {
        if let previous = sessions[nodeID], previous.connectionID != connectionID {
            previous.channel.close(promise: nil)
        }
        sessions[nodeID] = Entry(connectionID: connectionID, channel: channel)
    }

    /// Removes a session if it is still the registered one for its node.
    func close(nodeID: UUID, connectionID: UInt64) {
        if sessions[nodeID]?.connectionID == connectionID {
            sessions[nodeID] = nil
        }
    }

    /// Closes the session of a node (e.g. after `muster nodes forget`). Returns whether there was one.
    func disconnect(nodeID: UUID) -> Bool {
        guard let entry = sessions.removeValue(forKey: nodeID) else { return false }
        entry.channel.close(promise: nil)
        return true
    }

    func isConnected(_ nodeID: UUID) -> Bool { sessions[nodeID] != nil }
}
