"""The launcher: a single-threaded zygote that forks proxies."""
