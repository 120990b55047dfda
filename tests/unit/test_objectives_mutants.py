"""Training objective behaviour found missing by mutation testing (issue #18)."""
