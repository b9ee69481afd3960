"""The onboard control loop: camera observations -> policy -> action queue -> safety filter -> robot.

`pacing` (clock, precise sleep, cycle timer), `action_queue` (time-aligned chunks, horizon,
blending), `safety` (action filter, fault rules), `episode` (step log, summary, recorded episodes),
`loop` (`ControlLoop`, the one module that wires them to cameras, policy and robot), `commands`
(`rdvla run`, `rdvla demo`).
"""
