"""Command-line tools: genarena-train, -sample, -eval, -compare, -import, -scaling."""
