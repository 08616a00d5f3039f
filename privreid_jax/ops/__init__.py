"""Image operations on batches: conventional desensitization and image-similarity metrics."""
