"""Data layer: read task files into :class:`Example` records and format them into tokens."""
