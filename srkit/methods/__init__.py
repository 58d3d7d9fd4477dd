"""Built-in super-resolution methods, imported lazily through the registry."""
