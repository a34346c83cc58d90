/// Life cycle of a task row: `pending → assigned → running → succeeded | failed | cancelled` (DESIGN §4).
///
/// A task whose lease expires or whose attempt failed goes back to `pending` (with a backoff) until it has
/// used its attempts.
public enum TaskState: String, Codable, Sendable, CaseIterable {
    case pending
    case assigned
    case running
    case succeeded
    case failed
    case cancelled

    /// Whether nothing will happen to the task any more.
    public var isFinal: Bool {
        switch self {
        case .succeeded, .failed, .cancelled: true
        case .pending, .assigned, .running: false
        }
    }
}
