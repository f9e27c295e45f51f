"""Encoders: the SatCLIP location encoder (harmonics, SIREN), image encoders, checkpoint I/O."""
