"""The model's config: ``ModelArgs`` (the architecture a user picks, flat nanoGPT keys) and ``GPTConfig`` (those
plus the vocabulary: everything needed to build a ``GPT``, saved as a checkpoint's ``model_args``). Validated on
construction: a bad value raises ValueError naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .subtokens import PRIME_EMBEDS, code_size

MODEL_TYPES = ("gpt2", "diffusion")
# auto: learned for gpt2, rope for diffusion; learned_rope: both (AR -> diffusion adaptation of a learned-position
# model, adapt.py: the causal mask told the AR model where keys are; under full attention only rope does)
POS_EMBS = ("auto", "learned", "rope", "learned_rope")
ACTIVATIONS = ("gelu", "gelu_tanh")  # exact GELU (nanoGPT) | tanh approximation (GPT-2's weights, HF gelu_new)


@dataclass
class ModelArgs:
    """The architecture a user picks. Each key is declared and validated here once; ``TrainConfig`` inherits
    them as flat nanoGPT keys (``--n_layer=4``). Bad values raise ValueError naming the key."""

    model_type: str = "gpt2"  # gpt2 | diffusion
    block_size: int = 1024  # context length in tokens
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads (must divide n_embd)
    n_embd: int = 768  # model width
    dropout: float = 0.0  # dropout rate in [0, 1) (it and attn_dropout are the model keys a resume may change)
    # PyTorch's fused CPU attention takes no dropout: with it, attention runs unfused (1.7x slower per iteration at
    # 4 layers x 128, dropout 0.1)
    attn_dropout: float | None = None  # dropout on attention weights; None = dropout (nanoGPT); 0 keeps CPU fused
    bias: bool = False  # biases in Linear and LayerNorm layers (GPT-2's weights have them)
    pos_emb: str = "auto"  # learned (GPT-2 weights load) | rope (rotary, relative order) | auto (see POS_EMBS)
    qk_norm: bool = False  # RMS-normalise queries and keys per head (stabilises higher learning rates)
    diffusion_block: int = 0  # diffusion: 0 = bidirectional (MDLM); b > 0 = block-causal over blocks of b (BD3-LM)
    shift: bool | None = None  # diffusion: logit i from hidden state i-1 (DiffuGPT); None: on when adapting an AR model
    draft_len: int = 0  # gpt2: TiDAR's [MASK] draft block length (objective=tidar sets 8; 0 = a plain model)
    prime_bits: int = 0  # objective=prime: sub-tokens per token (0 = the fewest for prime_base: ceil(log2 V) at base 2)
    prime_base: int = 0  # objective=prime: the sub-tokens' base (0 = 2, or the smallest for prime_bits)
    prime_shuffle: bool = True  # objective=prime: shuffle token ids before encoding them (MDM-Prime-v2; saved)
    prime_embed: str = "candidates"  # objective=prime: input, candidates (+ the possible tokens' mean embedding) | sum

    def __post_init__(self) -> None:
        for key, allowed in (("model_type", MODEL_TYPES), ("pos_emb", POS_EMBS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"config key '{key}' must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        for key in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config key '{key}' must be positive; got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if "rope" in self.resolved_pos_emb and (self.n_embd // self.n_head) % 2:
            raise ValueError("pos_emb=rope needs an even head size (n_embd / n_head)")
        if self.diffusion_block < 0 or (self.diffusion_block and self.model_type != "diffusion"):
            raise ValueError(f"diffusion_block={self.diffusion_block} needs model_type=diffusion and a positive "
                             "size; use 0 for a plain model")
        if self.diffusion_block and self.block_size % self.diffusion_block:
            raise ValueError(f"diffusion_block ({self.diffusion_block}) must divide block_size ({self.block_size})")
        for key in ("dropout", "attn_dropout"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"config key '{key}' must be in [0, 1); got {value}")
        if self.shift and self.model_type != "diffusion":
            raise ValueError("shift=True is for diffusion models (an AR model predicts the next token already)")
        if self.draft_len < 0 or (self.draft_len and self.model_type != "gpt2"):
            raise ValueError(f"draft_len={self.draft_len} is for gpt2 models trained with objective=tidar (>= 0)")
        if self.prime_bits < 0 or self.prime_base < 0:
            raise ValueError(f"prime_bits and prime_base must be >= 0 (0 = automatic); got {self.prime_bits} and "
                             f"{self.prime_base}")
        if self.prime_embed not in PRIME_EMBEDS:
            raise ValueError(f"config key 'prime_embed' must be one of {', '.join(PRIME_EMBEDS)}; got "
                             f"{self.prime_embed!r}")
        if (self.prime_bits or self.prime_base) and (self.model_type != "diffusion" or self.diffusion_block):
            raise ValueError(f"prime_bits={self.prime_bits}, prime_base={self.prime_base}: partial masking is for "
                             "bidirectional diffusion models (objective=prime, model_type=diffusion, block 0)")

    @property
    def resolved_pos_emb(self) -> str:
        if self.pos_emb != "auto":
            return self.pos_emb
        return "rope" if self.model_type == "diffusion" else "learned"


@dataclass
class GPTConfig(ModelArgs):
    """ModelArgs plus the vocabulary: everything needed to build a GPT (saved as a checkpoint's model_args)."""

    vocab_size: int = 50304  # includes [MASK] for diffusion; the table is padded to a multiple of 64
    mask_token_id: int | None = None
    activation: str = "gelu"  # see ACTIVATIONS; set from the weights when they come from GPT-2
    # gpt2 trained to fill in the middle (objective=fim, diffusion/fim.py): the vocabulary's last 4 ids are the
    # sentinels <PRE> <SUF> <MID> <EOM> (logits like any token; never in the data)
    fim_sentinels: int = 0
    padded_vocab_size: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pos_emb = self.resolved_pos_emb
        self.shift = bool(self.shift)  # None (auto) resolves where the model is made: train.py, adapt.py
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}")
        if self.model_type == "diffusion":
            if self.mask_token_id is None:
                self.mask_token_id = self.vocab_size - 1
            if self.mask_token_id != self.vocab_size - 1:
                raise ValueError("diffusion needs mask_token_id == vocab_size - 1")
        if self.prime_bits or self.prime_base:  # the vocabulary is known here: resolve the automatic sizes
            self.prime_base, self.prime_bits = code_size(self.vocab_size - 1, self.prime_base, self.prime_bits)
        if self.draft_len:  # TiDAR (tidar.py): [MASK] is the row after the vocabulary, never a logit
            if self.mask_token_id not in (None, self.vocab_size):
                raise ValueError("a draft_len model needs mask_token_id == vocab_size")
            self.mask_token_id = self.vocab_size
        if self.fim_sentinels not in (0, 4) or (self.fim_sentinels and self.model_type != "gpt2"):
            raise ValueError(f"fim_sentinels={self.fim_sentinels}: a gpt2 model trained with objective=fim has 4 "
                             "(<PRE> <SUF> <MID> <EOM>), any other model 0")
        # gpt2 with [MASK] (TiDAR's drafts, input-token masking): the row after the vocabulary, never a logit
        mask_row = self.model_type == "gpt2" and self.mask_token_id is not None
        if mask_row and self.mask_token_id != self.vocab_size:
            raise ValueError("a gpt2 model's [MASK] is the row after its vocabulary: mask_token_id == vocab_size")
        self.padded_vocab_size = ((self.vocab_size + int(mask_row) + 63) // 64) * 64

    @property
    def text_vocab_size(self) -> int:
        """The data's ids: the vocabulary without [MASK] (diffusion) and without FIM's sentinels."""
        return self.vocab_size - self.fim_sentinels - int(self.model_type == "diffusion")

    @classmethod
    def for_data(cls, args: ModelArgs, data_vocab: int, fim: bool = False, mask_row: bool = False) -> GPTConfig:
        """The model ``args`` describe over a data vocabulary of ``data_vocab`` ids; diffusion appends [MASK] (a
        logit), a FIM model (``fim``) its 4 sentinels (logits), ``mask_row`` gives a gpt2 model a [MASK] input row
        (never a logit; input-token masking)."""
        diffusion = args.model_type == "diffusion"
        values = {f.name: getattr(args, f.name) for f in fields(ModelArgs)}
        sentinels = 4 if fim else 0
        vocab = data_vocab + int(diffusion) + sentinels
        mask_id = data_vocab if diffusion else (vocab if mask_row else None)
        return cls(**values, vocab_size=vocab, mask_token_id=mask_id, fim_sentinels=sentinels)

    def to_dict(self) -> dict[str, Any]:
        """The constructor's arguments (a checkpoint's ``model_args``): ``GPTConfig(**c.to_dict()) == c``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}
