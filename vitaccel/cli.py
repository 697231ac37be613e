def main(argv=None):
    raise SystemExit("vitaccel: CLI under construction")
