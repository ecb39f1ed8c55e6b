"""chatcap."""
