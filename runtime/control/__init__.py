"""The onboard control loop: camera observations -> policy -> action queue -> safety filter -> robot.

`pacing` (clock, precise sleep, cycle timer, the stepped clock of simulators), `config` (LoopConfig),
`broker` (the chunk broker: query scheduling and a chunk's arrival into the action queue),
`action_queue` (time-aligned chunks, horizon, blending), `safety` (action filter), `faults` (the
faults of a cycle and the reaction to them), `records` (the typed start, step, query and summary
records), `subscriber` (what the loop tells its listeners), `step_log` and `run_stats` (two of those
listeners), `episode` (recorded episodes), `plots`, and `loop` (`ControlLoop`, the one module that
wires them to cameras, policy and robot and paces the cycle). The commands `rdvla run` and `rdvla demo`
live in `rdvla.cli`.
"""
