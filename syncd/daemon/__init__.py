"""The long-running daemon: the scheduler, the probes and metrics server, systemd notify."""
