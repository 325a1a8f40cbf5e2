"""Stand-in for upstream ``training``."""
