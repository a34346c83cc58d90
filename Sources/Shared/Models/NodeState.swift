/// Life cycle of a node as the coordinator sees it (DESIGN §9).
public enum NodeState: String, Codable, Sendable, CaseIterable {
    case joining
    case ready
    case unreachable
    case forgotten
}
