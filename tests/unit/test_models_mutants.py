"""Decoupling module, MEER network and layer behaviour found missing by mutation testing (issue #18)."""
