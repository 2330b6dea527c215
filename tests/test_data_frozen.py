"""The one batching pipeline gives, bit for bit, the batches of the two it replaced.

Until issue 19 the default data options went through `QaracDataset`, `collate` and a
`DataLoader` over a `DistributedSampler` (the old `qarac.train.epoch_batches`), every other option set
through `CorpusBatches`. The digests below were recorded from those two pipelines (main at
c7983f8, by a script that built each case's batches as `qarac train` took them, ragged batches
left out, and hashed them as `digest` does); each case is now built by `CorpusBatches` alone,
through the DataLoader `qarac train` uses. Token ids and masks are integers and the labels
exact floats: the digests hold on any machine.

A change of the order, the tokenisation, the padding or the labels of any case shows here.
(The only order the merge changed is the one this cannot hold: non-default options with
`batching=cycled` and a seed other than 0 took `seed * 1_000_003 + epoch`; they now take
`DistributedSampler`'s seed + epoch, as the default options always did. At seed 0 the two agree.)
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from qarac.batch import INPUT_NAMES, QaracBatch
from qarac.data.batches import CorpusBatches
from qarac.data.corpora import Corpora
from qarac.data.options import data_config_for

# corpus, preset, data options, seed, batch size, max length, epoch, first batch, rank, processes,
# then what the old pipelines gave: batches (ragged ones left out), the ragged batches, the digest.
CASES = [
    ('sample', 'default', (), 0, 16, 128, 0, 0, 0, 1, 88, [], '531f23ef32b01761'),
    ('sample', 'default', (), 0, 16, 128, 1, 0, 0, 1, 88, [], '40b6954ec6e5b977'),
    ('sample', 'default', (), 3, 16, 128, 2, 5, 0, 1, 83, [], '300b763a4f6383d8'),
    ('sample', 'default', (), 0, 16, 16, 0, 0, 0, 1, 88, [], '3e873c39936bac9c'),
    ('sample', 'default', (), 0, 16, 128, 1, 0, 0, 2, 44, [], '6159fe90964fde81'),
    ('sample', 'default', (), 0, 16, 128, 1, 3, 1, 2, 41, [], '275230f9f20bc8a3'),
    ('small', 'default', (), 5, 2, 128, 0, 0, 0, 1, 4, [], '1cd92add5f8daafb'),
    ('small', 'default', (), 5, 2, 128, 2, 1, 0, 1, 3, [], '03fbb6cdf7906ec5'),
    ('small', 'default', (), 5, 2, 128, 1, 0, 1, 2, 2, [], '4ba5e980d550dba6'),
    ('small', 'default', (), 1, 3, 128, 0, 0, 2, 3, 1, [], 'e70c905bb11f8b2d'),
    ('small', 'default', ('encoder_special_tokens=false',), 0, 5, 128, 0, 0, 0, 1, 2, [], 'f17a09f04afe3385'),
    ('small', 'default', ('decoder_affixes=post_processor',), 0, 5, 128, 1, 0, 0, 1, 2, [], '0e971fd9a7cf8ddb'),
    ('small', 'default', ('padding=corpus_fit',), 0, 5, 128, 0, 0, 0, 1, 2, [], '8d71c1cbaed7d6c0'),
    ('small', 'default', ('padding=corpus',), 0, 2, 128, 0, 0, 0, 1, 4, [], '98afecc8533f54df'),
    ('small', 'default', ('truncate=false',), 0, 5, 128, 0, 0, 0, 1, 2, [], 'f08117fc119f9b6e'),
    ('small', 'default', ('batch_size=3',), 0, 5, 128, 2, 1, 0, 1, 2, [], 'fbe15a1b2c389198'),
    ('small', 'default', ('all_text=composed',), 0, 5, 128, 0, 0, 0, 1, 5, [], '3472e49d21a291ab'),
    ('small', 'default', ('batching=all_text_epoch',), 4, 2, 128, 1, 0, 0, 1, 3, [], '9f5ab1157346a3ee'),
    ('sample', 'default', ('padding=corpus_fit',), 0, 16, 128, 1, 2, 0, 1, 86, [], '39448f22a360498b'),
    ('sample', 'default', ('decoder_affixes=post_processor', 'truncate=true'), 0, 16, 12, 0, 0, 0, 1, 88, [],
     '2fe88905b6fe613f'),
    ('sample', 'legacy', (), 0, 16, 128, 0, 0, 0, 1, 7,
     [0, 2, 3, 4, 5, 7, 8, 9, 11, 13, 14, 15, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
      34, 35, 36, 38, 39, 40, 41, 42, 43, 44],
     '29084958d489528a'),
    ('sample', 'legacy', (), 2, 16, 128, 1, 0, 0, 1, 14,
     [0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 15, 17, 18, 20, 21, 22, 23, 25, 26, 27, 29, 30, 31, 33, 35, 36, 38,
      39, 40, 41, 42],
     '5536bbcc9fdbf163'),
    ('sample', 'legacy', ('padding=corpus_fit',), 0, 16, 128, 0, 0, 0, 1, 45, [], '3d8ab78249a31daf'),
    ('sample', 'legacy', ('padding=corpus_fit', 'batch_size=4'), 2, 16, 128, 2, 7, 0, 1, 353, [], 'a7b8146bcaccaf93'),
    ('small', 'legacy', ('padding=corpus_fit', 'batch_size=4'), 0, 16, 128, 3, 0, 0, 1, 5, [], '00e1af352e8820b5'),
]
# `parity.inputs.sample_batch`'s examples of the sample corpora (max length 32), drawn by
# numpy.random.default_rng(seed).choice(examples, count): seed, indices and digest.
EXAMPLES = [
    (0, [1190, 105, 23, 716, 431, 378, 57, 891], '5db9938523e9a825'),
    (4, [1323, 1237, 1018, 718, 1322], 'abd542dddfca625f'),
]


def digest(batches: list[QaracBatch]) -> str:
    """sha256 (16 hex digits) of every tensor of the batches, shapes and dtypes included."""
    hashed = hashlib.sha256()
    for batch in batches:
        tokens = [batch.inputs[name] for name in INPUT_NAMES] + [batch.targets[name] for name in
                                                               ("encode_decode", "reasoning")]
        tensors = [tensor for token in tokens for tensor in (token.input_ids, token.attention_mask)]
        for tensor in tensors + [batch.targets["consistency"]]:
            hashed.update(repr((tuple(tensor.shape), str(tensor.dtype))).encode())
            hashed.update(tensor.numpy().tobytes())
    return hashed.hexdigest()[:16]


@pytest.fixture(scope="module")
def all_corpora(corpora):
    """The sample corpora, and small ones of sizes 7, 4, 3, 5 (conclusions of different lengths)."""
    small = Corpora(
        all_text=[f"Sentence number {i} is here." for i in range(7)],
        question_answering=[(f"Who is person {i}?", f"Person {i} is Emma.") for i in range(4)],
        reasoning=[(f"All cats are grey {i}.", "Tom is a cat.", "Tom is grey" + " and old" * i + ".")
                   for i in range(3)],
        consistency=[(f"Ben runs {i}.", f"Ben moves {i}.", (1, 0, -1, 1, 0)[i]) for i in range(5)])
    return {"sample": corpora, "small": small}


def case_id(case) -> str:
    corpus, preset, options, seed, batch_size, max_length, epoch, start, rank, world = case[:10]
    return (f"{corpus}-{preset}-{'+'.join(options) or 'plain'}-s{seed}-b{batch_size}-L{max_length}"
            f"-e{epoch}@{start}-r{rank}of{world}")


@pytest.mark.parametrize("case", CASES, ids=map(case_id, CASES))
def test_batches_are_the_old_pipelines(all_corpora, tokenizer, case):
    corpus, preset, options, seed, batch_size, max_length, epoch, start, rank, world, count, ragged, expected = case
    data = CorpusBatches(all_corpora[corpus], tokenizer, data_config_for(preset, options), max_length=max_length,
                         batch_size=batch_size, seed=seed)
    found = [r.batch for r in data.find_ragged(epoch) if r.batch >= start]
    assert found == ragged
    if ragged:  # the loader would stop at the first; build the others one by one
        batches = [data.build(rows, index) for index, rows in enumerate(data.plan(epoch, rank, world))
                   if index >= start and index not in ragged]
    else:
        batches = list(data.loader(epoch, start, rank, world))
    assert len(batches) == count
    assert digest(batches) == expected


@pytest.mark.parametrize("seed, indices, expected", EXAMPLES)
def test_sample_batch_examples_are_the_old_collated_ones(corpora, tokenizer, seed, indices, expected):
    data = CorpusBatches(corpora, tokenizer, max_length=32)
    drawn = np.random.default_rng(seed).choice(data.example_count, size=len(indices), replace=False)
    assert drawn.tolist() == indices
    assert digest([data.examples(indices)]) == expected
