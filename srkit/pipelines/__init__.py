"""Method bases that several methods compose: a backbone and a sampler wired once (no method imports another)."""
