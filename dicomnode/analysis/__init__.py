"""Analysis pipelines (lge, cine, suggestions) and the pure metric functions they use."""
