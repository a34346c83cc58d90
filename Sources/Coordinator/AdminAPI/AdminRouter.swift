import Foundation
import Hummingbird
import Logging
import NIOCore
import Shared
import X509

/// What the admin API's routes work with.
public struct AdminDependencies: Sendable {
    public var database: Database
    public var nodes: NodeStore
    public var tokens: TokenStore
    /// Pin of the cluster CA, embedded in join tokens.
    public var caPin: CAPin
    /// `HOST:PORT` agents dial to join (advertise address + the agent listener's bound port).
    public var joinAddress: @Sendable () async -> String
    /// Number of live agent sessions.
    public var sessionCount: @Sendable () async -> Int
    /// Drops a node's live session (after it was forgotten).
    public var disconnect: @Sendable (UUID) async -> Void
    public var now: @Sendable () -> Date
    /// Tasks in the store.
    public var tasks: TaskStore
    /// Delivers new tasks at once when this coordinator holds the node's session (`nil`: the next tick of
    /// whichever coordinator holds it does).
    public var dispatcher: TaskDispatcher?
    /// Published modules (`nil`: the module routes answer 404).
    public var modules: ModuleServices?
    /// Workflows in the store.
    public var workflows: WorkflowStore
    /// Asks the workflow runner for a pass now (after a workflow was created, resumed or rolled back).
    public var wakeWorkflows: @Sendable () -> Void

    public init(
        database: Database, nodes: NodeStore, tokens: TokenStore, caPin: CAPin,
        joinAddress: @escaping @Sendable () async -> String, sessionCount: @escaping @Sendable () async -> Int,
        disconnect: @escaping @Sendable (UUID) async -> Void = { _ in }, now: @escaping @Sendable () -> Date = { Date() },
        tasks: TaskStore? = nil, dispatcher: TaskDispatcher? = nil, modules: ModuleServices? = nil,
        workflows: WorkflowStore? = nil, wakeWorkflows: @escaping @Sendable () -> Void = {}
    ) {
        self.modules = modules
        self.workflows = workflows ?? WorkflowStore(database: database, logger: database.logger)
        self.wakeWorkflows = wakeWorkflows
        self.tasks = tasks ?? dispatcher?.store ?? TaskStore(database: database, logger: database.logger)
        self.dispatcher = dispatcher
        self.database = database
        self.nodes = nodes
        self.tokens = tokens
        self.caPin = caPin
        self.joinAddress = joinAddress
        self.sessionCount = sessionCount
        self.disconnect = disconnect
        self.now = now
    }
}

/// Builds the admin API's router: `/health`, `/health/deep` without authentication, `/v1/…` behind
/// ``AdminAuthMiddleware``.
public enum AdminRouter {
    /// - Parameters:
    ///   - peerCertificate: Reads the client certificate of a connection (tests may substitute it).
    public static func make(
        dependencies: AdminDependencies,
        peerCertificate: @escaping @Sendable (any Channel) async throws -> Certificate? =
            AdminAuthMiddleware.tlsPeerCertificate
    ) -> Router<AdminRequestContext> {
        let router = Router(context: AdminRequestContext.self)
        router.add(middleware: AdminErrorMiddleware())
        HealthRoutes(dependencies: dependencies).register(on: router)
        let v1 = router.group("v1").add(middleware: AdminAuthMiddleware(peerCertificate: peerCertificate))
        TokensRoutes(dependencies: dependencies).register(on: v1)
        NodesRoutes(dependencies: dependencies).register(on: v1)
        TasksRoutes(dependencies: dependencies).register(on: v1)
        VolumesRoutes(dependencies: dependencies).register(on: v1)
        SyncRoutes(dependencies: dependencies).register(on: v1)
        ModulesRoutes(dependencies: dependencies).register(on: v1)
        WorkflowsRoutes(dependencies: dependencies).register(on: v1)
        return router
    }
}
