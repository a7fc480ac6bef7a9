"""The ``dataplan`` command line (typer + rich). Heavy imports live inside the commands."""
