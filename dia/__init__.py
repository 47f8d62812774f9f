"""DIA reference pipeline."""
