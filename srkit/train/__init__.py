"""One trainer for every method, on Hugging Face Accelerate."""
