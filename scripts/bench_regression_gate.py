#!/usr/bin/env python3
"""Regression gate for the data plane: a thin wrapper over `cargo xtask bench --gate`.

The gate runs fixed workloads (benches/gate.rs) under valgrind's callgrind and fails when
any of them executes more than 25 % more instructions than benches/baseline.json.
Instruction counts, unlike wall-clock medians, do not drift with a noisy host.
"""
import os
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.exit(subprocess.call(["cargo", "xtask", "bench", "--gate", *sys.argv[1:]], cwd=root))
