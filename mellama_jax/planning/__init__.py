"""Ahead-of-time planning for TPU pods from a CPU machine (mellama-plan is the command line).

topology.py   Cloud TPU names -> shapes, HBM, fake devices from libtpu
planner.py    compile the real train step for a topology; sweep remat x micro-batch; choose the fastest fit
compiled.py   per-chip memory/FLOPs of a compiled step, or the memory an out-of-memory compile asked for
flops.py      matmul FLOPs of a traced step (scan trip counts and remat recompute included)
config_files.py, report.py   loading configs with overrides; printing/JSON/README-table output
"""
