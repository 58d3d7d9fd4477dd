"""Reverse diffusion chains (:class:`srkit.types.Sampler` subclasses) shared by several methods."""
