"""advkit."""
