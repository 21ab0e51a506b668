"""Entry script shaped like the seed's example (never imported by the spec tests)."""

import argparse
import os


def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="output")
    parser.add_argument("--model", default="model")
    args, _ = parser.parse_known_args()
    os.makedirs(args.output, exist_ok=True)


def run(mini_batch):
    return [True for _ in mini_batch]
