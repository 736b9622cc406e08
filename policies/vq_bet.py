"""VQ-BeT (Lee et al. 2024): a behaviour transformer over residual-VQ codes of action chunks.

Two phases, both in the shared training loop:

1. the tokenizer: an MLP encoder maps a chunk of ``action_chunk_size`` (normalised, task-frame)
   actions to a latent that ``vector_quantize_pytorch.ResidualVQ`` quantises with two
   codebooks (primary, then secondary on the residual); an MLP decoder maps the quantised
   latent back. Loss: L1 reconstruction + commitment. The codebooks are learnable parameters
   (not EMA-updated), so the loop's weight EMA and checkpoint selection cover the whole tokenizer;
2. the behaviour transformer, with the tokenizer frozen: a causal GPT over the observation
   history interleaved with a learned action query token after each observation, plus
   ``n_action_pred_token - 1`` future query tokens. Each query's output predicts the code pair
   of the chunk that starts at its step: a primary head, a secondary head conditioned on the
   primary code (one-hot), and an offset head giving a residual chunk per (codebook, code).
   Loss: focal loss on both codes (weights 5 and 0.5) + L1 between the target chunk and the
   decoded true codes plus their offsets (weight 100 for actions in [-1, 1], the reference's).

Rollout: the current query's codes are sampled from softmax(logits / temperature) with the
slot's generator (primary first, then the secondary given it), decoded, offset, and the chunk
executed as every chunking policy's is (``policies/chunking.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from policies.base import register
from policies.chunking import ChunkConfig, ChunkPolicy
from policies.learning import append_phase, phase_summary, set_trainable
from policies.modules import MinMaxNormalizer, ObservationEncoder

N_CODEBOOKS = 2  # primary and secondary


@dataclass
class VQBeTConfig(ChunkConfig):
    #: observation history of the GPT (LeRobot's vqbet: 5)
    n_obs_steps: int = 5
    #: query tokens from the current step on: the current chunk and n_action_pred_token - 1 later ones
    n_action_pred_token: int = 3
    #: actions per tokenised chunk (LeRobot's vqbet: 5)
    action_chunk_size: int = 5
    #: actions of each chunk executed before the next prediction: the whole chunk
    n_action_steps: int = 5
    #: optimiser steps of the tokenizer phase
    tokenizer_steps: int = 3000
    #: learning rate of the tokenizer phase
    tokenizer_lr: float = 1e-3
    #: codes per codebook (primary and secondary); PassagePassing 20 Hz used 169 of the 256 pairs
    codebook_size: int = 16
    #: width of the tokenizer's latent (LeRobot: 256)
    latent_dim: int = 64
    #: hidden width of the tokenizer's MLP encoder and decoder
    tokenizer_hidden_dim: int = 128
    #: GPT layers (LeRobot: 8). CPU-sized: at width 128 with dropout 0.1 and batch 128 it trained at
    #: 3.5 steps/s (one core, three jobs on the machine); at width 64, no dropout, batch 64: 17.9
    gpt_n_layer: int = 4
    #: GPT attention heads (LeRobot: 8)
    gpt_n_head: int = 4
    #: GPT width (LeRobot: 512); see gpt_n_layer
    gpt_n_embd: int = 64
    #: GPT dropout (LeRobot: 0.1); see gpt_n_layer
    dropout: float = 0.0
    #: weight of the primary code's focal loss (vq_bet's)
    primary_code_loss_weight: float = 5.0
    #: weight of the secondary code's focal loss (vq_bet's)
    secondary_code_loss_weight: float = 0.5
    #: weight of the L1 chunk loss (vq_bet's value for actions in [-1, 1])
    offset_loss_weight: float = 100.0
    #: focal loss exponent γ (Lin et al.'s)
    focal_gamma: float = 2.0
    #: softmax temperature of the code sampling at rollout
    temperature: float = 0.1
    #: optimiser steps of the behaviour-transformer phase (validation still rose at the end)
    train_steps: int = 10000
    #: optimiser steps between validations (five per run)
    eval_every: int = 2000
    #: windows per optimiser step; see gpt_n_layer
    batch_size: int = 64
    #: learning rate of the behaviour-transformer phase
    lr: float = 5e-4

    LIMITS: ClassVar[dict[str, str]] = {
        "n_action_pred_token": "positive", "action_chunk_size": "positive", "tokenizer_steps": "positive",
        "tokenizer_lr": "positive", "latent_dim": "positive", "tokenizer_hidden_dim": "positive",
        "gpt_n_layer": "positive", "gpt_n_head": "positive", "gpt_n_embd": "positive", "dropout": "fraction",
        "primary_code_loss_weight": "non-negative", "secondary_code_loss_weight": "non-negative",
        "offset_loss_weight": "non-negative", "focal_gamma": "non-negative", "temperature": "positive"}
    #: the reference sizes (LeRobot's vqbet defaults) for a GPU
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "gpu": {"gpt_n_layer": 8, "gpt_n_head": 8, "gpt_n_embd": 512, "dropout": 0.1, "latent_dim": 256,
                "tokenizer_steps": 20000, "train_steps": 100000, "eval_every": 10000, "batch_size": 256, "lr": 1e-4,
                "device": "cuda"},
    }

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.n_action_steps <= self.action_chunk_size:
            raise ValueError(f"n_action_steps={self.n_action_steps} must be in 1..action_chunk_size "
                             f"({self.action_chunk_size})")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size={self.codebook_size} must be 2 or more")

    @property
    def n_queries(self) -> int:
        """Query tokens whose chunks are trained: one per observation step, then the future ones."""
        return self.n_obs_steps - 1 + self.n_action_pred_token

    @property
    def horizon(self) -> int:
        """Actions a training window needs: the last query's chunk ends here."""
        return self.n_queries + self.action_chunk_size - 1


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class ActionTokenizer(nn.Module):
    """Residual-VQ VAE over flattened action chunks: chunk -> (primary, secondary) code -> chunk."""

    def __init__(self, chunk_size: int, action_dim: int, hidden_dim: int, latent_dim: int, codebook_size: int):
        super().__init__()
        flat = chunk_size * action_dim
        self.encoder = _mlp([flat, hidden_dim, hidden_dim, latent_dim])
        self.decoder = _mlp([latent_dim, hidden_dim, hidden_dim, flat])
        self.quantizer = ResidualVQ(dim=latent_dim, num_quantizers=N_CODEBOOKS, codebook_size=codebook_size,
                                    kmeans_init=True, kmeans_iters=10, learnable_codebook=True, ema_update=False)

    def forward(self, chunks: torch.Tensor):
        """(N, chunk, A) -> reconstruction (N, chunk, A), codes (N, 2), commitment loss."""
        quantized, codes, commitment = self.quantizer(self.encoder(chunks.flatten(1)))
        return self.decoder(quantized).view_as(chunks), codes, commitment.sum()

    @torch.no_grad()
    def codes(self, chunks: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(chunks.flatten(1)), freeze_codebook=True)[1]

    def decode(self, codes: torch.Tensor, chunk_shape: tuple[int, int]) -> torch.Tensor:
        return self.decoder(self.quantizer.get_output_from_indices(codes)).view(len(codes), *chunk_shape)


class BehaviourTransformer(nn.Module):
    """Causal GPT over [o_1, q, o_2, q, ..., o_T, q, q_future...] with code and offset heads."""

    def __init__(self, feature_dim: int, n_obs_steps: int, n_future: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float, codebook_size: int, chunk_flat: int):
        super().__init__()
        self.n_obs_steps, self.n_future = n_obs_steps, n_future
        self.obs_projection = nn.Linear(feature_dim, n_embd)
        self.query = nn.Parameter(torch.randn(n_embd) * 0.02)
        n_tokens = 2 * n_obs_steps + n_future
        self.positions = nn.Parameter(torch.zeros(1, n_tokens, n_embd))
        layer = nn.TransformerEncoderLayer(n_embd, n_head, 4 * n_embd, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(n_embd)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(n_tokens), persistent=False)
        self.primary_head = _mlp([n_embd, n_embd, codebook_size])
        self.secondary_head = _mlp([n_embd + codebook_size, n_embd, codebook_size])
        self.offset_head = _mlp([n_embd, n_embd, N_CODEBOOKS * codebook_size * chunk_flat])
        self.codebook_size = codebook_size

    def forward(self, obs_features: torch.Tensor) -> torch.Tensor:
        """(B, T_o, F) -> query features (B, T_o - 1 + 1 + n_future, n_embd)."""
        b = len(obs_features)
        obs = self.obs_projection(obs_features)
        query = self.query.expand(b, self.n_obs_steps, -1)
        tokens = torch.stack([obs, query], dim=2).flatten(1, 2)  # interleaved: o_1, q, o_2, q, ...
        tokens = torch.cat([tokens, self.query.expand(b, self.n_future, -1)], dim=1) + self.positions
        hidden = self.norm(self.blocks(tokens, mask=self.causal, is_causal=True))
        queries = torch.cat([torch.arange(1, 2 * self.n_obs_steps, 2),
                             torch.arange(2 * self.n_obs_steps, 2 * self.n_obs_steps + self.n_future)])
        return hidden[:, queries]

    def secondary_logits(self, features: torch.Tensor, primary: torch.Tensor) -> torch.Tensor:
        return self.secondary_head(torch.cat([features, F.one_hot(primary, self.codebook_size).float()], dim=-1))

    def offsets(self, features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Sum over the codebooks of the offset predicted for each one's code: (N, chunk_flat)."""
        table = self.offset_head(features).view(len(features), N_CODEBOOKS, self.codebook_size, -1)
        rows = torch.arange(len(features), device=features.device)[:, None]
        return table[rows, torch.arange(N_CODEBOOKS, device=features.device)[None], codes].sum(dim=1)


class VQBeTModel(nn.Module):
    def __init__(self, obs_encoder: ObservationEncoder, tokenizer: ActionTokenizer, transformer: BehaviourTransformer,
                 action_dim: int):
        super().__init__()
        self.obs_encoder = obs_encoder
        self.action_normalizer = MinMaxNormalizer(action_dim)
        self.tokenizer = tokenizer
        self.transformer = transformer


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Cross-entropy down-weighting well-classified examples by (1 - p)^gamma (Lin et al.)."""
    log_p = F.log_softmax(logits, dim=-1).gather(-1, target[:, None]).squeeze(-1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


@register("vq-bet")
class VQBeT(ChunkPolicy):
    config_class = VQBeTConfig

    def build_model(self) -> nn.Module:
        c = self.config
        encoder = ObservationEncoder(c.obs_dim, c.views, c.resnet_width)
        tokenizer = ActionTokenizer(c.action_chunk_size, c.action_dim, c.tokenizer_hidden_dim, c.latent_dim,
                                    c.codebook_size)
        transformer = BehaviourTransformer(encoder.feature_dim, c.n_obs_steps, c.n_action_pred_token - 1, c.gpt_n_layer,
                                           c.gpt_n_head, c.gpt_n_embd, c.dropout, c.codebook_size,
                                           c.action_chunk_size * c.action_dim)
        return VQBeTModel(encoder, tokenizer, transformer, c.action_dim)

    # ---------------------------------------------------------------- training
    def target_chunks(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised chunk of each query: (B, n_queries, chunk, A) from (B, horizon, A)."""
        c = self.config
        normalized = self.model.action_normalizer.normalize(actions)
        return normalized.unfold(1, c.action_chunk_size, 1).transpose(-1, -2)[:, : c.n_queries]

    def tokenizer_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Phase 0: L1 reconstruction of the target chunks through the residual VQ, plus commitment."""
        chunks = self.target_chunks(batch["actions"]).flatten(0, 1)
        reconstruction, _, commitment = self.model.tokenizer(chunks)
        return F.l1_loss(reconstruction, chunks) + commitment

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Phase 1, the behaviour transformer on the frozen tokenizer's codes."""
        c = self.config
        chunks = self.target_chunks(batch["actions"]).flatten(0, 1)
        features = self.model.transformer(self.model.obs_encoder(self._observations(batch))).flatten(0, 1)
        codes = self.model.tokenizer.codes(chunks)
        transformer = self.model.transformer
        primary = focal_loss(transformer.primary_head(features), codes[:, 0], c.focal_gamma)
        secondary = focal_loss(transformer.secondary_logits(features, codes[:, 0]), codes[:, 1], c.focal_gamma)
        with torch.no_grad():
            decoded = self.model.tokenizer.decode(codes, chunks.shape[1:])
        predicted = decoded + transformer.offsets(features, codes).view_as(chunks)
        return (c.primary_code_loss_weight * primary + c.secondary_code_loss_weight * secondary
                + c.offset_loss_weight * F.l1_loss(predicted, chunks))

    def fit(self, dataset, *, work_dir=None, validate=None, progress: bool = True) -> dict[str, Any]:
        """The tokenizer (no validation: it cannot act alone), then the transformer on its frozen
        codes, each phase resumable in its own sub-folder."""
        c = self.config
        data = self.setup(dataset)
        folder = (lambda name: Path(work_dir) / name) if work_dir is not None else (lambda name: None)
        tokenizer, transformer = self.model.tokenizer, [m for n, m in self.model.named_children() if n != "tokenizer"]

        set_trainable([tokenizer], True)
        set_trainable(transformer, False)
        history = self.optimise(data, c.tokenizer_steps, work_dir=folder("tokenizer"), progress=progress,
                                lr=c.tokenizer_lr, loss=self.tokenizer_loss)
        usage = self.codebook_usage(data)
        history["phases"] = [{**phase_summary("tokenizer", history, 0), **usage}]

        set_trainable([tokenizer], False)
        set_trainable(transformer, True)
        result = self.optimise(data, c.train_steps, work_dir=folder("transformer"), validate=validate,
                               progress=progress, phase=1)
        return append_phase(history, result, "behaviour transformer")

    @torch.no_grad()
    def codebook_usage(self, data: dict[str, torch.Tensor]) -> dict[str, Any]:
        """How many codes of each codebook (and code pairs) the training chunks use, and the
        tokenizer's L1 reconstruction error on them (normalised units)."""
        self.model.eval()
        chunks = self.target_chunks(data["actions"]).flatten(0, 1)
        codes = self.model.tokenizer.codes(chunks)
        error = (self.model.tokenizer.decode(codes, chunks.shape[1:]) - chunks).abs().mean()
        return {"codes_used": [len(torch.unique(codes[:, k])) for k in range(N_CODEBOOKS)],
                "code_pairs_used": len(torch.unique(codes, dim=0)), "reconstruction_l1": float(error)}

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def predict_chunk(self, obs_history, slots: list[int]) -> np.ndarray:
        c = self.config
        features, frame = self.encode(obs_history)
        transformer = self.model.transformer
        current = transformer(features)[:, c.n_obs_steps - 1]
        generators = [self._generators[s] for s in slots]
        primary = _sample(transformer.primary_head(current), c.temperature, generators)
        secondary = _sample(transformer.secondary_logits(current, primary), c.temperature, generators)
        codes = torch.stack([primary, secondary], dim=1)
        shape = (c.action_chunk_size, c.action_dim)
        chunk = self.model.tokenizer.decode(codes, shape) + transformer.offsets(current, codes).view(-1, *shape)
        return frame.poses_to_world(self.model.action_normalizer.unnormalize(chunk).cpu().numpy())


def _sample(logits: torch.Tensor, temperature: float, generators: list[torch.Generator]) -> torch.Tensor:
    probs = torch.softmax(logits / temperature, dim=-1).cpu()
    picks = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)]
    return torch.cat(picks).to(logits.device)
