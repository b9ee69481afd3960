"""`rdvla verify`: a bundle's golden cases on a backend, against the accuracy gates."""

from __future__ import annotations

import argparse
import time

from rdvla.cli.arguments import add_backend_options, add_bundle_argument, open_policy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check a bundle's backend against its golden cases",
        description="Run the bundle's golden cases (1/4/12/32 fixed iterations, adaptive MSE 1e-3/1e-4) on a backend and "
        "compare the actions and stopping iterations with the reference outputs stored in the bundle, against the "
        "accuracy gates of the precision. Exit status 1 when a gate fails.",
    )
    add_bundle_argument(p)
    add_backend_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rdvla.runtime.gates import gate_for
    from rdvla.runtime.verify import gate_failures, verify_actions

    from rdvla.runtime.golden import load_cases

    policy, precision = open_policy(args.bundle, args)
    try:
        report = policy.bundle.calibration_report()  # written by `rdvla calibrate`: FP16/INT8 against FP32 on its data
        gate = gate_for(precision)
        cases = load_cases(policy.bundle)
        if not cases:
            raise ValueError(f"{args.bundle} holds no golden cases")
        start = time.perf_counter()
        results = verify_actions(policy, cases)
    finally:
        policy.close()
    failures = gate_failures(results, gate)
    if report is not None:
        print("\n".join(str(line) for line in report["summary"]))
    print(f"bundle {args.bundle}: {len(cases)} golden cases on {policy.backend.name} {precision} in {time.perf_counter() - start:.1f} s")
    for line in policy.backend.layer_precisions(policy.bundle.manifest, precision):
        print(f"  {line}")
    print(f"gate ({precision}): actions max abs <= {gate.actions_max_abs:g}, iteration agreement >= {gate.iteration_agreement:g}")
    print(f"  {'mode':11s} {'max abs':>9s} {'max rel':>9s} {'unnorm.':>9s}  iterations (reference)")
    for mode, r in results.items():
        ok = not [f for f in failures if f.startswith(f"{mode}:")]
        print(f"  {mode:11s} {r.max_abs:9.2e} {r.max_rel:9.2e} {r.unnormalized_max_abs:9.2e}  {r.iterations} "
              f"({r.reference_iterations})  {'ok' if ok else 'FAIL'}")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("all gates passed")
    return 0


