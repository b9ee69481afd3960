"""The bundle contract's names: its graphs and the tensors every backend binds by name.

manifest.json lists each tensor's shape and dtype; `Bundle.open` holds the graphs to `CONTRACT` at
the manifest's model dimensions. Modules use these as ``contract.VLM_PRELUDE``, ``contract.GRAPHS``.
"""

from __future__ import annotations

VLM_PRELUDE = "vlm_prelude"
CORE_STEP = "core_step"  # latent -> next_latent
CORE_STEP_DECODE = "core_step_decode"  # latent, prev_actions -> next_latent, actions, mse, cosine
DECODE = "decode"  # latent -> actions
GRAPHS = (VLM_PRELUDE, CORE_STEP, CORE_STEP_DECODE, DECODE)

PIXEL_VALUES, INPUT_IDS, PROPRIO = "pixel_values", "input_ids", "proprio"
INJECTION = "injection"
LATENT, NEXT_LATENT = "latent", "next_latent"
PREV_ACTIONS, ACTIONS = "prev_actions", "actions"
MSE, COSINE = "mse", "cosine"


def kv_names(stage: str, count: int) -> list[str]:
    """Context tensor names of one stage ('core' or 'coda'): [core0_keys, core0_values, core1_keys, ...]."""
    return [f"{stage}{i}_{part}" for i in range(count) for part in ("keys", "values")]


# The tensors every backend binds by name: (inputs, outputs) of each graph, besides the context K/V.
CONTRACT: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    VLM_PRELUDE: (frozenset({PIXEL_VALUES, INPUT_IDS, PROPRIO}), frozenset({INJECTION})),
    CORE_STEP: (frozenset({LATENT, INJECTION}), frozenset({NEXT_LATENT})),
    CORE_STEP_DECODE: (frozenset({LATENT, PREV_ACTIONS, INJECTION}), frozenset({NEXT_LATENT, ACTIONS, MSE, COSINE})),
    DECODE: (frozenset({LATENT}), frozenset({ACTIONS})),
}
