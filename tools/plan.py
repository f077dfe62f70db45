#!/usr/bin/env python3
"""Ahead-of-time planner: will this training config fit on this TPU topology, and how should it run?

From a checkout: the same command as `mellama-plan` (mellama_jax/commands/plan.py).
"""
import sys

from mellama_jax.commands.plan import main

if __name__ == "__main__":
    sys.exit(main())
