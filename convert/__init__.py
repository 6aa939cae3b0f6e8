"""litedet."""
