"""Small helpers every layer may use: hashing, JSON conversion, progress lines, the fault-injection seam."""
