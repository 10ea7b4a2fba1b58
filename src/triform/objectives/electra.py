"""ELECTRA: replaced-token detection (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as
Discriminators Rather Than Generators").

A small generator, trained as a masked LM on 15 % of the tokens (all replaced by [MASK], §2), fills
each masked position with a token sampled from its distribution (sampled, not its best guess, and
with no gradient through the sample, §2). The model being trained, the discriminator, then reads the
whole corrupted text and says at every position whether the token is the original or a replacement;
a sample equal to the original counts as original (§2). Both learn together, minimising
L_MLM + λ · L_Disc with λ = 50 (§2), and share the token and position embeddings (§3.2, "Weight
sharing"). The generator is narrower than the discriminator, by `generator_scale` of its width
(1/4 to 1/2 work best, §3.2 and Figure 3; the paper's small and base models use 1/4 and 1/3), and
as deep unless `generator_layers` says otherwise.

The generator and the detection head are modules of this objective, not of the model: the trainer
optimises `training_module(model)`, an `ElectraModel` that holds the model as `model`, and a saved
model folder holds the discriminator alone, which fine-tunes as any other body.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.config import ModelConfig
from triform.errors import TriformError
from triform.kernels.loss import cross_entropy
from triform.models.build import KERNELS, build_model, build_stack, initialise_weights
from triform.models.stack import Embeddings, StackInputs
from triform.nn.feedforward import ACTIVATIONS
from triform.nn.norm import make_norm
from triform.objectives.base import EVAL_SEED, Objective, Windows
from triform.objectives.batch import IGNORE, Batch
from triform.objectives.mlm import MaskedLM, MaskedLMOptions

DETECTED = "replaced"  # the label of a replaced token as `triform inspect` shows it


@dataclass(frozen=True)
class ElectraOptions:
    rate: float = 0.15  # fraction of the tokens masked for the generator (§2, as BERT)
    generator_scale: float = 0.25  # the generator's width (d_model, heads, d_ff) / the discriminator's (§3.2)
    generator_layers: int | None = None  # None: as many layers as the discriminator (the paper's generators)
    discriminator_weight: float = 50.0  # λ, the weight of the replaced-token detection loss (§2)


@dataclass
class ElectraBatch(Batch):
    """The generator's batch (masked text, targets at the masks) and what the discriminator's needs."""

    originals: Tensor | None = None  # (B, T) the text before masking, laid out as `ids`
    draws: Tensor | None = None  # (B, T) uniform draws in [0, 1) that pick each sample, so a resumed run samples alike

    def model_inputs(self) -> dict:
        return {**super().model_inputs(), "originals": self.originals, "draws": self.draws}


class ElectraOutputs(NamedTuple):
    generator_logits: Tensor  # (N, vocab_size) at the N masked positions
    scores: Tensor  # (B, T) the discriminator's logit that each token was replaced
    replaced: Tensor  # (B, T) True where the sampled token differs from the original
    corrupted: Tensor  # (B, T) the discriminator's input


class Electra(Objective):
    name = "electra"
    rival = "mlm"  # BERT at the same compute (Clark et al. 2020, Table 1)
    Options = ElectraOptions
    needs = ("cls", "sep", "mask")
    tokenizer_kind = "wordpiece"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        if not 0.0 < o.rate < 1.0:
            raise ValueError(f"electra rate: expected a value in (0, 1), got {o.rate}")
        if not 0.0 < o.generator_scale <= 1.0:
            raise ValueError(f"electra generator_scale: expected a value in (0, 1], got {o.generator_scale}")
        if o.generator_layers is not None and o.generator_layers < 1:
            raise ValueError(f"electra generator_layers: expected a positive integer, got {o.generator_layers}")
        if o.discriminator_weight <= 0:
            raise ValueError(f"electra discriminator_weight: expected a positive weight, got {o.discriminator_weight}")
        self.masking = Masking(
            self.specials,
            self.vocab_size,
            arch=self.arch,
            pattern=self.pattern,
            options=MaskedLMOptions(rate=o.rate, mask_fraction=1.0, random_fraction=0.0),
            packed=self.packed,
            pack=self.pack,
        )

    @classmethod
    def source_target(cls, arch: str) -> bool:
        return False

    @classmethod
    def writes_on(cls, arch: str) -> bool:
        return False  # the discriminator scores tokens; its output head was never trained

    @classmethod
    def layout_for(cls, arch: str, pattern: str, specials):
        raise TriformError(
            "this model was trained with electra: a discriminator that tells original tokens from replaced ones, "
            "it neither continues text nor fills masks; fine-tune it (triform finetune --task classify ...)"
        )

    def windows(self, max_len: int) -> Windows:
        return self.masking.windows(max_len)

    @property
    def separator(self) -> int:
        return self.masking.separator

    def compute(self, batch: Batch, parameters: dict[str, int]) -> float:
        """The discriminator's tokens x parameters, and the generator's: it reads every token too, with
        about generator_scale² of the discriminator's non-embedding parameters (width scaled, §3.2; a
        generator_layers unlike the discriminator's depth is not counted), so that `triform compare`
        gives electra no more compute than the other objectives."""
        return super().compute(batch, parameters) * (1 + self.options.generator_scale**2)

    # --- the data ------------------------------------------------------------------------------
    def prepare(self, examples, generator=None) -> ElectraBatch:
        masked, draws = self.masking.prepare_with_draws(examples, generator)
        chosen = masked.targets != IGNORE
        fields = {f.name: getattr(masked, f.name) for f in dataclasses.fields(Batch)}
        return ElectraBatch(**fields, originals=torch.where(chosen, masked.targets, masked.ids), draws=draws)

    # --- the training problem --------------------------------------------------------------------
    def training_module(self, model: nn.Module) -> ElectraModel:
        """The discriminator `model` with a new generator and detection head (train/problem.py)."""
        never = torch.zeros(model.config.vocab_size, dtype=torch.bool)
        never[sorted(i for i in self.specials.all_ids if i < model.config.vocab_size)] = True
        generator = build_generator(model.config, self.options, never)
        return ElectraModel(model, generator, build_detector(model.config))

    def n_targets(self, batch: ElectraBatch) -> int:
        """Every real token is judged: the loss is a sum over them, divided by their number (loss)."""
        return int(batch.ids.numel() if batch.padding_mask is None else batch.padding_mask.sum())

    def loss(self, outputs: ElectraOutputs, batch: ElectraBatch) -> Tensor:
        """L_MLM + λ · L_Disc (§2), as one sum over the batch's real tokens divided by their number:
        L_Disc is the mean over every token, and L_MLM the generator's summed cross-entropy over
        rate × the real tokens, the masks expected, rather than over the masks drawn. A sum over
        tokens makes the gradient the same however a batch is split between processes and
        accumulation steps (train/loop.py); the two counts differ by the special tokens, which are
        never masked: 2 of the 128 tokens of a `[CLS] text [SEP]` window."""
        generator_sum, detection_sum = self.sums(outputs, batch)
        return self.combined(generator_sum, detection_sum, self.n_targets(batch))

    def combined(self, generator_sum, detection_sum, n_tokens: int):
        return (generator_sum / self.options.rate + self.options.discriminator_weight * detection_sum) / max(
            n_tokens, 1
        )

    def sums(self, outputs: ElectraOutputs, batch: ElectraBatch) -> tuple[Tensor, Tensor]:
        """The generator's cross-entropy summed over the masks, the detection loss over every real token."""
        targets = batch.targets[batch.logits_at]
        generator_mean = cross_entropy(
            outputs.generator_logits, targets, ignore_index=IGNORE, label_smoothing=self.label_smoothing
        )
        detection_sum = F.binary_cross_entropy_with_logits(
            outputs.scores[self.real(batch)].float(), outputs.replaced[self.real(batch)].float(), reduction="sum"
        )
        return generator_mean * targets.numel(), detection_sum

    @staticmethod
    def real(batch: Batch) -> Tensor:
        return torch.ones_like(batch.ids, dtype=torch.bool) if batch.padding_mask is None else batch.padding_mask

    @torch.no_grad()
    def evaluate(self, model, data, context) -> dict:
        """The loss, its two parts as means, the discriminator's accuracy and the share of tokens
        replaced, with the same masks and samples at every evaluation (EVAL_SEED)."""
        if not isinstance(model, ElectraModel):
            raise TriformError(
                "an electra model folder holds the discriminator alone (its generator is not saved): "
                "evaluate it by fine-tuning it on a task"
            )
        sums = [0.0] * 6  # generator loss, its masks, detection loss, tokens, correct, replaced
        for number, examples, part, weight in context.batches(data):
            batch = self.collate(examples, torch.Generator().manual_seed(EVAL_SEED + number), part).to(context.device)
            with context.autocast():
                outputs = model(**batch.model_inputs())
            generator_sum, detection_sum = self.sums(outputs, batch)
            real = self.real(batch)
            correct = ((outputs.scores > 0) == outputs.replaced)[real]
            parts = (float(generator_sum), batch.n_targets, float(detection_sum), int(real.sum()))
            parts += (float(correct.sum()), float(outputs.replaced[real].sum()))
            sums = [s + weight * p for s, p in zip(sums, parts)]
        generator_sum, n_masks, detection_sum, n_tokens, correct, replaced = context.sum(sums)
        generator_loss = generator_sum / max(n_masks, 1)
        return {
            "loss": self.combined(generator_sum, detection_sum, n_tokens),
            "generator_loss": generator_loss,
            "generator_perplexity": math.exp(min(generator_loss, 50)),
            "discriminator_loss": detection_sum / max(n_tokens, 1),
            "discriminator_accuracy": correct / max(n_tokens, 1),
            "replaced": replaced / max(n_tokens, 1),
            "tokens": int(n_tokens),
        }

    def summary(self, result: dict) -> str:
        return (
            f"loss {result['loss']:.4f} | generator {result['generator_loss']:.4f} | discriminator "
            f"{result['discriminator_loss']:.4f}, accuracy {100 * result['discriminator_accuracy']:.1f}% | "
            f"replaced {100 * result['replaced']:.1f}%"
        )

    def shown_rows(self, batch: ElectraBatch, names, seed: int = 0) -> list[tuple[str, list[str]]]:
        """What `triform inspect` shows: the generator's input and targets, and the discriminator's
        input with the replaced tokens marked, sampled by an untrained generator (as at the first step)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            config = ModelConfig(vocab_size=self.vocab_size, max_len=max(batch.ids.shape[1], 8), dropout=0.0)
            discriminator = build_model(config)
            electra = self.training_module(discriminator).eval()
            with torch.no_grad():
                outputs = electra(**batch.model_inputs())
        targets = ["·" if int(t) == IGNORE else names([t])[0] for t in batch.targets[0]]
        replaced = outputs.replaced[0].tolist()
        corrupted = [f"*{token}*" if r else token for token, r in zip(names(outputs.corrupted[0]), replaced)]
        return [
            ("generator input", names(batch.ids[0])),
            ("generator target", targets),
            ("discriminator input", corrupted),
            (DETECTED, ["1" if r else "0" for r in replaced]),
        ]


class Masking(MaskedLM):
    """The generator's input: BERT's choice of positions, every one of them [MASK] (§2), and for each
    text, right after its masks, the uniform draws that will pick its samples. Drawn text by text,
    the stream of random numbers is the same however a batch is cut into accumulation steps."""

    def prepare_with_draws(self, examples, generator) -> tuple[Batch, Tensor]:
        """(the masked batch, (B, T) draws laid out as its rows: `[CLS] text [SEP]`)."""
        self._draws: list[Tensor] = []  # filled by corrupt() during this call alone
        batch = self.prepare(examples, generator)
        draws = torch.zeros(batch.ids.shape)
        for row, drawn in enumerate(self._draws):
            draws[row, 1 : 1 + len(drawn)] = drawn
        return batch, draws

    def corrupt(self, sequence: list[int], word_starts, generator) -> tuple[list[int], list[int]]:
        corrupted = super().corrupt(sequence, word_starts, generator)
        self._draws.append(torch.rand(len(sequence), generator=generator))
        return corrupted


class ElectraModel(nn.Module):
    """What the trainer optimises: the discriminator (`model`, the model being trained and saved), the
    generator and the replaced-token detection head. The generator reads the discriminator's
    embeddings, handed to it on each pass rather than held, so that they are stored once."""

    def __init__(self, model: nn.Module, generator: Generator, detector: nn.Module):
        super().__init__()
        self.model = model
        self.generator = generator
        self.detector = detector

    def forward(self, ids: Tensor, pattern: str, *, originals=None, draws=None, logits_at=None, **inputs):
        if originals is None:  # another objective's batch (one of a mixture's): the model alone reads it
            return self.model(ids, pattern, logits_at=logits_at, **inputs)
        stack_inputs = StackInputs(ids, pattern, **inputs)
        embeddings = self.model.stack.embeddings
        generator_logits = self.generator(stack_inputs, embeddings, logits_at)  # (N, vocab_size)
        with torch.no_grad():  # no gradient through the sampling (§2)
            samples = sample(generator_logits.float(), draws[logits_at], self.generator.never_sampled)
            corrupted = originals.masked_scatter(logits_at, samples)
        replaced = corrupted != originals  # a sample equal to the original counts as original (§2)
        hidden = self.model.hidden_states(dataclasses.replace(stack_inputs, ids=corrupted))  # (B, T, d_model)
        return ElectraOutputs(generator_logits, self.detector(hidden).squeeze(-1), replaced, corrupted)


def sample(logits: Tensor, draws: Tensor, never: Tensor) -> Tensor:
    """(N,) one token per row of (N, V) `logits`, drawn from their softmax by inverting its cumulative
    distribution at the uniform `draws` (N,), never a token of `never` (the special tokens: the
    generator's targets are never special, and the discriminator should never read [MASK], §1)."""
    logits = logits.masked_fill(never.to(logits.device), -math.inf)
    cumulative = logits.softmax(-1).cumsum(-1)  # (N, V)
    picked = torch.searchsorted(cumulative, (draws * cumulative[:, -1]).unsqueeze(-1).contiguous())
    return picked.squeeze(-1).clamp(max=logits.shape[-1] - 1)


class Generator(nn.Module):
    """A narrower stack over the discriminator's embeddings, projected to its width (ELECTRA's
    `embeddings_project`), with a masked-LM head whose output projection is the shared token table."""

    def __init__(self, project: nn.Module, stack: nn.Module, transform: nn.Module, vocab_size: int, never: Tensor):
        super().__init__()
        self.project = project  # d_model -> the generator's width
        self.stack = stack  # its own embeddings are None: it reads the discriminator's
        self.transform = transform  # BERT's dense + activation + norm, back to the embeddings' width
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.register_buffer("never_sampled", never, persistent=False)

    def forward(self, inputs: StackInputs, embeddings: Embeddings, logits_at: Tensor) -> Tensor:
        def embed(ids: Tensor, positions: Tensor, token_types: Tensor | None) -> Tensor:
            return self.project(embeddings(ids, positions, token_types))

        hidden = self.stack(inputs, embed=embed)[logits_at]  # (N, generator width)
        return F.linear(self.transform(hidden), embeddings.token.weight, self.bias)  # (N, vocab_size)


def generator_config(config: ModelConfig, options: ElectraOptions) -> ModelConfig:
    """The discriminator's config, narrowed by generator_scale: fewer heads of the same size (ELECTRA's
    generators keep 64-wide heads), d_ff in proportion."""
    n_heads = max(1, round(config.n_heads * options.generator_scale))
    n_kv_heads = (
        None
        if config.n_kv_heads is None
        else math.gcd(n_heads, max(1, round(config.n_kv_heads * options.generator_scale)))
    )
    d_model = n_heads * config.head_dim
    return config.replace(
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_ff=max(1, round(config.d_ff * d_model / config.d_model)),
        n_layers=options.generator_layers or config.n_layers,
    )


def build_generator(config: ModelConfig, options: ElectraOptions, never: Tensor) -> Generator:
    """The generator of a discriminator of `config`; `never` (vocab_size,) marks the tokens it never samples."""
    narrow = generator_config(config, options)
    stack = build_stack(
        narrow, KERNELS, nn.Embedding(1, narrow.d_model), narrow.n_layers, cross=False, bidirectional_bias=True
    )
    stack.embeddings = None  # built as every stack is, then dropped: it reads the discriminator's
    transform = nn.Sequential(
        KERNELS.linear(narrow.d_model, config.d_model),
        Activation(config.activation),
        make_norm(config.norm, config.d_model, config.norm_eps),
    )
    generator = Generator(KERNELS.linear(config.d_model, narrow.d_model), stack, transform, config.vocab_size, never)
    initialise_weights(generator, narrow)
    return generator


def build_detector(config: ModelConfig) -> nn.Module:
    """ELECTRA's discriminator head: dense, activation, one logit per token."""
    detector = nn.Sequential(
        KERNELS.linear(config.d_model, config.d_model), Activation(config.activation), KERNELS.linear(config.d_model, 1)
    )
    initialise_weights(detector, config)
    return detector


class Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return ACTIVATIONS[self.name](x)
