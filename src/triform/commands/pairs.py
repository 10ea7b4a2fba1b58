"""`triform pairs`: the architecture x objective x pattern table, with the reason for each refusal."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--refused", action="store_true", help="also list the refused triples and why")


def run(args) -> int:
    from triform.objectives.compat import markdown_table, refusal, refused_triples

    print(markdown_table())
    if args.refused:
        print()
        for arch, objective, pattern in refused_triples():
            print(f"refused  {arch} + {objective} + {pattern}: {refusal(arch, objective, pattern)}")
    return 0
