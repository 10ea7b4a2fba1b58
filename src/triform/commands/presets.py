"""`triform presets`: the named presets with their shapes and objectives."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print each preset's full config as JSON")


def run(args) -> int:
    import json

    from triform.models.presets import PRESETS

    if args.json:
        print(
            json.dumps(
                {
                    name: {"model": p.model.to_dict(), "objective": p.objective, **p.objective_options}
                    for name, p in PRESETS.items()
                },
                indent=2,
            )
        )
        return 0
    print(f"{'preset':<14} {'arch':<16} {'layers':>7} {'d_model':>7} {'heads':>5} {'objective':<9} reference")
    for name, preset in PRESETS.items():
        m = preset.model
        layers = f"{m.n_layers}+{m.decoder_layers}" if m.arch == "encoder-decoder" else str(m.n_layers)
        print(
            f"{name:<14} {m.arch:<16} {layers:>7} {m.d_model:>7} {m.n_heads:>5} {preset.objective:<9} "
            f"{preset.reference}"
        )
    return 0
