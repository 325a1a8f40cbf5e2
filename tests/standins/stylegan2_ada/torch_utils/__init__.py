"""Stand-in for upstream ``torch_utils``."""
