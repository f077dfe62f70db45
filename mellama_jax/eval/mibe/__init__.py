"""Everything specific to Me-LLaMA's MIBE suite: its scoring rules and the means to rebuild its test sets.

rules        Me-LLaMA's own scorer (`--matching mibe`), rule for rule from the reference's vital_measure.py
ner          its HTML span → BIO reading and entity F1 for the NER tasks
prompts      the reference's prompt templates, byte for byte
build        test records from each dataset's single-file original (`mellama-build-mibe`)
build_notes  the same for note collections and research releases (i2b2 2010, emrQA, BioNLI)
"""
