"""The ping-pong schedule of the recurrent loop, shared by every backend.

A backend holds two latent buffers and two action buffers. Each call reads the current buffer of
each pair it touches and writes the other one, so nothing is copied between iterations. A
*direction* is the pair of indices current before a call: `(latent,)` for core_step, `(latent,
actions)` for the graphs that write actions. The two indices move independently because `step`
advances the latent without decoding. Backends bind (or capture) one runner per (graph, direction)
at load, and `PingPong` tells them which one each call uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdvla.runtime import contract

Direction = tuple[int, ...]
LATENT_PAIR, ACTIONS_PAIR = "latent", "actions"

# Every (graph, direction) the loop can ask for.
DIRECTIONS: dict[str, tuple[Direction, ...]] = {
    contract.CORE_STEP: ((0,), (1,)),
    contract.CORE_STEP_DECODE: ((0, 0), (0, 1), (1, 0), (1, 1)),
    contract.DECODE: ((0, 0), (0, 1), (1, 0), (1, 1)),
}


def slots(graph: str, direction: Direction) -> dict[str, tuple[str, int]]:
    """Tensor name -> (buffer pair, index) that one direction of `graph` binds."""
    if graph == contract.CORE_STEP:
        (s,) = direction
        return {contract.LATENT: (LATENT_PAIR, s), contract.NEXT_LATENT: (LATENT_PAIR, 1 - s)}
    if graph not in DIRECTIONS:
        raise ValueError(f"{graph} has no ping-pong buffers")
    s, a = direction
    bound = {contract.LATENT: (LATENT_PAIR, s), contract.ACTIONS: (ACTIONS_PAIR, 1 - a)}
    if graph == contract.CORE_STEP_DECODE:
        bound.update({contract.NEXT_LATENT: (LATENT_PAIR, 1 - s), contract.PREV_ACTIONS: (ACTIONS_PAIR, a)})
    return bound


@dataclass
class PingPong:
    """Which of the two latent / action buffers holds the current latent and the latest actions."""

    latent: int = 0
    actions: int = 0

    def reset(self) -> None:
        self.latent = self.actions = 0

    def step(self) -> Direction:
        direction = (self.latent,)
        self.latent ^= 1
        return direction

    def step_decode(self) -> Direction:
        direction = (self.latent, self.actions)
        self.latent ^= 1
        self.actions ^= 1
        return direction

    def decode(self) -> Direction:
        direction = (self.latent, self.actions)
        self.actions ^= 1
        return direction
