"""Built-in HR -> LR degradations, imported lazily through the registry."""
