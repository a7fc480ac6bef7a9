"""Built-in real tasks (BIG-bench from its registry source archive)."""
