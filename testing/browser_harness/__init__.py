"""A minimal static page + loopback server that runs stock web-llm against built variants."""
