"""Example data for `make demo` and the tests — not part of the library.

corpus.py   a small deterministic three-domain corpus (PubMed-like abstracts, clinical notes, general text),
            instruction sets and MIBE eval files, written by the recipe's prepare stage
mibe.py     synthetic test records for every MIBE task (`python -m mellama_jax.demo.mibe OUT_DIR`)

Nothing here is read by training, generation or evaluation; real runs use the user's own files.
"""
