"""Text in, text out: stop strings, streaming, fill-mask and mask-predict through TextGenerator."""

import pytest
import torch
from conftest import SPECIALS, tiny_config
from text_models import SENTENCES, random_model, single_thread, trained_masked_lm, word_setup  # noqa: F401

from triform.checkpoint import save_model
from triform.errors import TriformError
from triform.generate import GenerationConfig, TextGenerator
from triform.models import build_model
from triform.vocab import special_token_strings

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = ["one two", "red green blue", "the cat"]


def generator(arch="stack", objective=None, pattern=None, **changes):
    tokenizer, specials = word_setup()
    return TextGenerator(
        random_model(arch, tokenizer, **changes), tokenizer, specials, objective=objective, pattern=pattern
    )


@pytest.mark.parametrize("arch, objective", [("stack", None), ("stack", "seq2seq"), ("encoder-decoder", None)])
def test_stop_strings_cut_the_text_exactly(arch, objective):
    g = generator(arch, objective)
    for prompt in PROMPTS:
        full = g.generate(prompt, max_new_tokens=12)
        words = full.text.split(" ")
        assert len(words) == 12 and full.finish_reason == "length"
        # A stop string over two tokens, and one that starts and ends inside tokens.
        for stop in (f"{words[3]} {words[4]}", f"{words[5][-1]} {words[6][:1]}"):
            cut = g.generate(prompt, max_new_tokens=12, stop=[stop, "never appears"])
            assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"
            assert cut.ids == full.ids[: len(cut.ids)] and len(cut.ids) < 12
            beam = g.generate(prompt, max_new_tokens=12, stop=stop, num_beams=2)
            assert stop not in beam.text


def test_streamed_pieces_join_into_the_generated_text_and_never_show_a_stop_string():
    g = generator()
    for prompt in PROMPTS:
        text = g.generate(prompt, max_new_tokens=10).text
        pieces = list(g.stream(prompt, max_new_tokens=10))
        assert "".join(pieces) == text and len(pieces) > 1
        stop = text.split(" ")[6][:2]
        cut = g.generate(prompt, max_new_tokens=10, stop=stop).text
        pieces = list(g.stream(prompt, max_new_tokens=10, stop=stop))
        assert "".join(pieces) == cut and all(stop not in piece for piece in pieces)
    sampled = dict(do_sample=True, seed=3, top_p=0.9, max_new_tokens=10)
    assert "".join(g.stream(PROMPTS[0], **sampled)) == g.generate(PROMPTS[0], **sampled).text


def test_streaming_a_byte_level_tokenizer_holds_back_incomplete_characters():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special_token_strings(4), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(["Grüße aus Köln, schöne Straße! 🙂 " * 3], trainer)
    model = build_model(tiny_config(vocab_size=tokenizer.get_vocab_size())).eval()
    g = TextGenerator(model, tokenizer)
    for seed in range(3):
        options = dict(do_sample=True, seed=seed, max_new_tokens=24)
        text = g.generate("Grüße", **options).text
        pieces = list(g.stream("Grüße", **options))
        assert "".join(pieces) == text
        assert all(not piece.endswith("\ufffd") for piece in pieces[:-1])


def test_several_samples_per_prompt_come_back_prompt_major():
    g = generator()
    out = g.generate(PROMPTS, do_sample=True, num_return_sequences=3, seed=0, max_new_tokens=6, batch_size=2)
    assert [o.prompt_index for o in out] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len({o.text for o in out[:3]}) > 1


def test_a_prompt_too_long_is_named_or_truncated():
    g = generator(max_len=8)
    with pytest.raises(TriformError, match="prompt 1: 7 tokens leave no room .* max_len 8"):
        g.generate(["one", "one two three four five six seven"])
    out = g.generate(["one", "one two three four five six seven"], truncate=True, max_new_tokens=5)
    assert [len(o.ids) for o in out] == [5, 1]  # [BOS] + the last 6 words + 1 new token = max_len


def test_fill_mask_ranks_the_learned_word_first_with_probabilities():
    model, tokenizer, specials = trained_masked_lm()
    g = TextGenerator(model, tokenizer, specials, objective="mlm")
    (candidates,) = g.fill_mask("the cat sat on the [MASK]", top_k=3)
    assert candidates[0].token == "mat" and len(candidates) == 3
    probabilities = [c.probability for c in candidates]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    batch = g.fill_mask(["a [MASK] ran in the park", "my bird [MASK] at the [MASK]"], top_k=2)
    assert [[m[0].token for m in text] for text in batch] == [["dog"], ["sang", "window"]]
    with pytest.raises(TriformError, match="text 0: no \\[MASK\\]"):
        g.fill_mask("the cat sat")


def test_mask_predict_writes_a_learned_sentence_from_its_first_words():
    model, tokenizer, specials = trained_masked_lm()
    g = TextGenerator(model, tokenizer, specials, objective="mlm")
    for sentence in SENTENCES:
        words = sentence.split()
        assert g.mask_predict(" ".join(words[:2]), length=4, iterations=4) == sentence
    assert g.mask_predict("the [MASK] sat on the [MASK]", iterations=2) == "the cat sat on the mat"


def test_mask_predict_remasks_n_times_t_minus_t_over_t_least_confident_slots():
    tokenizer, specials = word_setup()
    model = random_model("stack", tokenizer)
    masks_seen = []
    forward = model.forward

    def counting_forward(ids, *args, **kwargs):
        masks_seen.append(int((ids == specials.mask).sum()))
        return forward(ids, *args, **kwargs)

    model.forward = counting_forward
    text = TextGenerator(model, tokenizer, specials, objective="mlm").mask_predict("one", length=6, iterations=3)
    assert masks_seen == [6, 4, 2]  # N (T - t) / T for N = 6, T = 3 (Ghazvininejad et al. 2019, eq. 1)
    assert len(text.split()) == 7 and "[MASK]" not in text


def test_fill_mask_refuses_a_model_trained_for_something_else():
    with pytest.raises(
        TriformError, match="fill-mask needs a stack trained with mlm; this model is an stack trained with clm"
    ):
        generator(objective="clm").fill_mask("a [MASK]")
    with pytest.raises(TriformError, match="trained with mlm: it fills masks"):
        generator(objective="mlm").generate("a b")


def test_a_model_folder_remembers_how_it_was_trained(tmp_path):
    g = generator(objective="seq2seq", pattern="causal")
    save_model(
        g.model,
        tmp_path / "m",
        specials=g.specials,
        tokenizer=g.tokenizer,
        extra={"objective": "seq2seq", "pattern": "causal"},
    )
    loaded = TextGenerator.load(tmp_path / "m")
    assert (loaded.layout.kind, loaded.layout.pattern) == ("source-target", "causal")
    assert loaded.generate(PROMPTS, max_new_tokens=5) == g.generate(PROMPTS, max_new_tokens=5)
    torch.manual_seed(0)
    save_model(g.model, tmp_path / "plain", tokenizer=g.tokenizer)
    assert TextGenerator.load(tmp_path / "plain").layout.kind == "continue"  # nothing recorded: a causal LM


def test_streaming_in_bf16_casts_the_weights_once_and_leaves_autocast_balanced():
    """step_by_step keeps autocast's nesting raised for the life of the stream, so that its bf16
    copies of the weights are made at the first step only, and lowers it however the stream ends."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from triform.generate import resolve_layout
    from triform.generate.engine import steps

    model = build_model(tiny_config("stack")).eval()
    weight_shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}

    class WeightCasts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and tuple(args[0].shape) in weight_shapes:
                WeightCasts.count += 1
            return func(*args, **(kwargs or {}))

    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6, precision="bf16")
    _, stream = steps(model, layout, [[30, 31, 32]], config)
    # The first steps cast each weight once: the prompt's rows and a decoding row may be computed by
    # different kernels (kernels/ chooses by measurement), so the one-row step may make its own copies.
    next(stream), next(stream)
    with WeightCasts():
        assert len(list(stream)) == 4
    assert WeightCasts.count == 0
    _, abandoned = steps(model, layout, [[30, 31, 32]], config)
    next(abandoned)
    abandoned.close()
    assert torch.autocast_increment_nesting() == 1  # nothing left raised by either stream
    torch.autocast_decrement_nesting()
