"""Command line: `python -m s2attn demo [...]`."""
import sys


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m s2attn demo [--help]")
        return 0 if args else 2
    if args[0] == "demo":
        from .demo import main as demo_main

        return demo_main(args[1:])
    print(f"unknown command {args[0]!r}; try: python -m s2attn demo", file=sys.stderr)
    return 2


sys.exit(main())
