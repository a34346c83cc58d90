import ArgumentParser

extension Muster {
    /// `muster tasks [ls|show ID|run|cancel ID]` (`ls` when no verb is given).
    struct Tasks: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tasks", abstract: "List, show, run and cancel tasks on nodes.",
            subcommands: [TasksList.self, TasksShow.self, TasksRun.self, TasksCancel.self],
            defaultSubcommand: TasksList.self)
    }
}
