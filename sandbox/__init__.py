"""Running untrusted experiment code: backends and resource limits."""
