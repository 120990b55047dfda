"""The trainer's wiring (build_nets, set_trainable, build_stage, restore, load_model): behaviour
found missing by mutation testing (issue #18)."""
