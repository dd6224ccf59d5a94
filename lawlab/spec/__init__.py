"""The study spec: its pydantic models, its issues, loading a TOML file and resolving plugin names."""
