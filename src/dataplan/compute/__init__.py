"""Model computations: tensors in, tensors out. No files, no run folders, no CLI."""
