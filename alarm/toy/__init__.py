"""The toy world: the method in miniature on a CPU (a locally trained teacher LM, synthetic sound classes)."""
