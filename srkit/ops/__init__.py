"""Tensor operations shared by methods and degradations (MATLAB-compatible resizing, ...)."""
