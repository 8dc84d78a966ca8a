"""What runs on the sandbox side: the isolation chain and the proxy (PID 1)."""
