"""Image–report retrieval: demo bank builder, text-encoder export, projection training and evaluation (torch here only)."""
