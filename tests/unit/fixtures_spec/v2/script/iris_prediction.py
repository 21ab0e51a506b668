"""Entry script shaped like Azure ML's iris sample (never imported by the spec tests)."""

import argparse


def init():
    global model_path
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    known, _ = parser.parse_known_args()
    model_path = known.model


def run(mini_batch, mini_batch_context=None):
    return [str(row) for row in mini_batch.itertuples()]
