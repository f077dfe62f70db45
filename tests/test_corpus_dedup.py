"""Deduplication semantics: connected components of exact groups and verified LSH-band pairs, each keeping its
canonically first document — independent of the order documents arrive in (workers, bundles)."""
import random

import pytest
from data_fixtures import WORDS, write_jsonl
from datasketch import LeanMinHash, MinHashLSH

from mellama_jax.data.config import DataConfig
from mellama_jax.data.dedup import SCHEME, DedupConfig, Deduplicator, band_keys, bands, duplicates, fingerprint, similar
from mellama_jax.data.errors import DataReport
from mellama_jax.data.screen import decide, scan_unit
from mellama_jax.data.units import plan_units


def _chain(n_words=400, steps=4, changes=5, seed=0):
    """A, B, C, D: each one a few words away from the previous one, so neighbours are near duplicates but the
    ends of the chain are not."""
    r = random.Random(seed)
    w = [r.choice(WORDS) for _ in range(n_words)]
    out = [" ".join(w)]
    for s in range(1, steps):
        for p in r.sample(range(n_words), changes):
            w[p] = f"edit{s}x{p}"
        out.append(" ".join(w))
    return out


def test_transitive_chain_is_one_component_first_seen_is_not():
    cfg = DedupConfig(threshold=0.8)
    texts = _chain(seed=8)
    other = " ".join(random.Random(9).choice(WORDS) for _ in range(400))
    texts = texts + [texts[2].upper() + "!", other]  # an exact (normalised) copy of C, an unrelated document
    fp = [fingerprint(t, cfg) for t in texts]
    sig = [s for _, s in fp]
    # the premises, on the signatures themselves: neighbours share an LSH band and are similar, A and C or D not
    b, r = bands(cfg)
    share = [set(band_keys(s, b, r)) for s in sig]
    assert all(share[i] & share[i + 1] and similar(sig[i], sig[i + 1], cfg.threshold) for i in range(3))
    assert not similar(sig[0], sig[2], cfg.threshold) and not similar(sig[0], sig[3], cfg.threshold)
    got = duplicates([(n, k, s) for n, (k, s) in enumerate(fp)], cfg)
    assert got == {1: ("near", 0), 2: ("near", 0), 3: ("near", 0), 4: ("exact", 2)}
    # the first-seen rule (a duplicate of an earlier *kept* document) keeps C: it is not close to A
    dd = Deduplicator(cfg)
    first_seen = {n for n, (k, s) in enumerate(fp) if dd.check(n, k, s) is not None}
    assert first_seen != set(got) and 2 not in first_seen
    # the order documents arrive in does not matter, only their canonical numbers
    for seed in range(3):
        shuffled = [(n, k, s) for n, (k, s) in enumerate(fp)]
        random.Random(seed).shuffle(shuffled)
        assert duplicates(shuffled, cfg) == got


def test_band_keys_find_the_candidates_datasketch_lsh_finds():
    cfg = DedupConfig(threshold=0.7)
    texts = _chain(steps=6, changes=12, seed=3) + _chain(steps=3, changes=30, seed=4)
    sigs = [fingerprint(t, cfg)[1] for t in texts]
    b, r = bands(cfg)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    for i, s in enumerate(sigs):
        lsh.insert(i, LeanMinHash(seed=cfg.seed, hashvalues=s, scheme=SCHEME))
    keys = [set(band_keys(s, b, r)) for s in sigs]
    for i, s in enumerate(sigs):
        want = set(lsh.query(LeanMinHash(seed=cfg.seed, hashvalues=s, scheme=SCHEME)))
        assert {j for j in range(len(sigs)) if keys[i] & keys[j]} == want, i


@pytest.mark.beam  # make test-beam: the GroupByKey screening on two worker processes vs the local decision
def test_beam_screening_matches_the_local_decisions(tmp_path):
    pytest.importorskip("apache_beam")
    from mellama_jax.data import screen_beam
    chain = _chain(seed=8)
    rng = random.Random(5)
    others = [" ".join(rng.choice(WORDS) for _ in range(120)) for _ in range(6)]
    # the chain's links in two files (two units), out of order, with an exact copy and unrelated documents
    a = write_jsonl(str(tmp_path / "a.jsonl"), [{"text": t} for t in [others[0], chain[3], chain[0], others[1]]])
    b = write_jsonl(str(tmp_path / "b.jsonl"), [{"text": t} for t in [chain[2], others[2], chain[1],
                                                                       chain[0].lower(), others[3]]])
    cfg = DataConfig.from_config(dict(components=[dict(name="c", weight=1.0, sources=[a, b])],
                                      dedup=dict(threshold=0.8)), DataReport())
    units = plan_units(cfg)
    local = decide(units, [scan_unit(u, False, cfg.dedup, None) for u in units], cfg.dedup, None, None)
    # one component; its canonically first document is D (a.jsonl's second record), kept; A's lower-cased copy
    # is an exact duplicate of A
    assert local.remove == {0: {2: "duplicate"}, 1: {0: "duplicate", 2: "duplicate", 3: "duplicate"}}
    assert local.report["dedup"]["removed"] == {"near": 3, "exact": 1}
    beam = screen_beam.screen(cfg, units, None, ["--runner=DirectRunner", "--direct_num_workers=2",
                                                 "--direct_running_mode=multi_processing"], str(tmp_path / "work"))
    assert beam.remove == local.remove and beam.report == local.report
