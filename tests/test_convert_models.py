"""Parity with `transformers`: every family imports with the same logits, hidden states and loss,
fine-tunes, and exports back to a folder `transformers` loads with the same outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hf_models import ENCODER_ONLY, FAMILIES, VOCAB, single_thread, tiny, transformers  # noqa: F401

from triform.convert import export_hf, import_hf
from triform.models import StackInputs
from triform.objectives import make_objective

AUTO = {
    "stack-mlm": transformers.AutoModelForMaskedLM,
    "stack-clm": transformers.AutoModelForCausalLM,
    "encoder-decoder": transformers.AutoModelForSeq2SeqLM,
}
TEXTS = [[9, 17, 33, 41, 8, 77, 23, 54, 60], [12, 5, 90, 31], [44, 45, 46, 47, 48, 49, 50]]
TARGETS = [[70, 71, 72], [15, 16, 17, 18, 19, 20], [33]]


def auto_class(pretrained):
    if pretrained.config.arch == "encoder-decoder":
        return AUTO["encoder-decoder"]
    causal = pretrained.extra["hf"]["model_type"] in ("gpt2", "llama", "mistral", "qwen2", "qwen3")
    return AUTO["stack-clm" if causal else "stack-mlm"]


def objective_for(pretrained, family):
    """The objective each family was trained with, over special tokens completed where the folder
    (which holds no tokenizer) names none."""
    s = pretrained.specials
    fill = {
        role: value
        for role, value in dict(pad=s.pad if s.pad is not None else 3, bos=3, eos=4, cls=3, sep=4, mask=6).items()
        if getattr(s, role) is None
    }
    specials = dataclasses.replace(s, **fill)
    config = pretrained.config
    if family in ENCODER_ONLY:
        return make_objective("mlm", specials, VOCAB, rate=0.4)
    if config.arch == "stack":
        return make_objective("clm", specials, VOCAB)
    return make_objective("seq2seq", specials, VOCAB, arch="encoder-decoder")


def prepare(objective):
    generator = torch.Generator().manual_seed(0)
    if objective.name == "seq2seq":
        return objective.prepare(list(zip(TEXTS, TARGETS)), generator)
    return objective.prepare(TEXTS, generator)


def reference_loss(reference, objective, batch):
    """The same batch through `transformers`, with its own loss."""
    if objective.name == "seq2seq":
        return reference(
            input_ids=batch.source_ids,
            attention_mask=batch.source_padding_mask,
            decoder_input_ids=batch.ids,
            decoder_attention_mask=batch.padding_mask,
            labels=batch.targets,
        ).loss
    if objective.name == "mlm":
        return reference(input_ids=batch.ids, attention_mask=batch.padding_mask, labels=batch.targets).loss
    # clm: transformers shifts the labels itself, so it reads the whole sequence, final [EOS] included.
    ids = torch.cat([batch.ids, batch.ids[:, :1]], dim=1)
    labels = torch.cat([batch.ids[:, :1], batch.targets], dim=1)
    lengths = (batch.targets != -100).sum(1)
    for row, length in enumerate(lengths.tolist()):
        ids[row, length] = batch.targets[row, length - 1]
        labels[row, 0] = -100
    mask = torch.arange(ids.shape[1])[None] <= lengths[:, None]
    return reference(input_ids=ids, attention_mask=mask, labels=labels).loss


def logits_of(model, batch):
    """triform's full logits for a batch, whatever the objective asked for."""
    inputs = {k: v for k, v in batch.model_inputs().items() if k != "logits_at"}
    return model(**inputs)


def reference_logits(reference, batch, arch):
    if arch == "encoder-decoder":
        return reference(
            input_ids=batch.source_ids,
            attention_mask=batch.source_padding_mask,
            decoder_input_ids=batch.ids,
            decoder_attention_mask=batch.padding_mask,
        ).logits
    return reference(input_ids=batch.ids, attention_mask=batch.padding_mask).logits


def real(tensor, mask):
    return tensor if mask is None else tensor[mask]


@pytest.fixture(scope="module", params=FAMILIES)
def imported(request, tmp_path_factory):
    family = request.param
    folder = tmp_path_factory.mktemp(family) / "hf"
    reference = tiny(family)
    reference.save_pretrained(folder)
    return family, reference, import_hf(folder), folder


@torch.no_grad()
def test_logits_hidden_states_and_loss_match_transformers(imported):
    family, reference, pretrained, _ = imported
    objective = objective_for(pretrained, family)
    batch = prepare(objective)
    assert batch.padding_mask is not None  # the comparison covers padded rows
    expected = reference_logits(reference, batch, pretrained.config.arch)
    got = logits_of(pretrained.model, batch)
    torch.testing.assert_close(real(got, batch.padding_mask), real(expected, batch.padding_mask), atol=1e-4, rtol=0)

    hidden = reference(**reference_inputs(batch, pretrained.config.arch), output_hidden_states=True)
    model = pretrained.model
    if pretrained.config.arch == "stack":
        mask, theirs = batch.padding_mask, hidden.hidden_states[-1]
        ours = model.hidden_states(StackInputs(batch.ids, batch.pattern, mask))
    else:
        mask, theirs = batch.source_padding_mask, hidden.encoder_last_hidden_state
        ours = model.encode(batch.source_ids, mask)
    torch.testing.assert_close(real(ours, mask), real(theirs, mask), atol=1e-4, rtol=0)

    loss = objective.loss(pretrained.model(**batch.model_inputs()), batch)
    torch.testing.assert_close(loss, reference_loss(reference, objective, batch), atol=1e-5, rtol=0)


def reference_inputs(batch, arch):
    if arch == "encoder-decoder":
        return dict(
            input_ids=batch.source_ids,
            attention_mask=batch.source_padding_mask,
            decoder_input_ids=batch.ids,
            decoder_attention_mask=batch.padding_mask,
        )
    return dict(input_ids=batch.ids, attention_mask=batch.padding_mask)


@torch.no_grad()
def test_export_gives_transformers_the_original_logits(imported, tmp_path):
    family, reference, pretrained, _ = imported
    batch = prepare(objective_for(pretrained, family))
    export_hf(pretrained, tmp_path / "out")
    loaded = auto_class(pretrained).from_pretrained(tmp_path / "out").eval()
    assert type(loaded) is type(reference)
    arch = pretrained.config.arch
    # At real tokens: RoBERTa's padding reads a row before position 0, which triform does not keep.
    mask = batch.padding_mask
    torch.testing.assert_close(
        real(reference_logits(loaded, batch, arch), mask),
        real(reference_logits(reference, batch, arch), mask),
        atol=1e-5,
        rtol=0,
    )
    again = import_hf(tmp_path / "out")
    assert again.config == pretrained.config
    torch.testing.assert_close(logits_of(again.model, batch), logits_of(pretrained.model, batch), atol=0, rtol=0)


def test_imported_model_fine_tunes_and_converts_back(imported, tmp_path):
    family, _, pretrained, folder = imported
    model = import_hf(folder).model.train()  # a fresh copy: the fixture's model stays as imported
    objective = objective_for(pretrained, family)
    batch = prepare(objective)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = objective.loss(model(**batch.model_inputs()), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9
    tuned = dataclasses.replace(pretrained, model=model.eval())
    export_hf(tuned, tmp_path / "tuned")
    loaded = auto_class(pretrained).from_pretrained(tmp_path / "tuned").eval()
    with torch.no_grad():
        got = reference_logits(loaded, batch, pretrained.config.arch)
        torch.testing.assert_close(
            real(got, batch.padding_mask), real(logits_of(model, batch), batch.padding_mask), atol=1e-4, rtol=0
        )
