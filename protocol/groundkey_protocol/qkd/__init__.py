"""Key distillation: sync, sifting, estimation, reconciliation, verification, amplification."""
