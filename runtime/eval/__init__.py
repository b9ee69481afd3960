"""Closed-loop evaluation in the LIBERO simulator (`rdvla eval`): episodes through the control loop, their
results, resuming, plots and demonstrations. docs/eval.md describes the protocol."""
