import ArgumentParser

/// `--systemd system|user` on the agent's commands.
extension SystemdManager.Scope: ExpressibleByArgument {}
