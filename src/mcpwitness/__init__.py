"""mcpwitness: audit what MCP tool calls really do, from the kernel."""
__version__ = "0.1.0"
