"""
Visual Echoes: one masked generative transformer over [audio tokens, image tokens].

The model is a MAGE-style encoder-decoder ViT. Training masks a random fraction of each modality's
tokens (ratio from a truncated Gaussian), drops half of each modality's positions before the
encoder, and asks the decoder to predict the masked ids. Generation starts from [MASK] tokens and
unmasks them over N steps (MaskGIT); classifier-free guidance needs no extra training because
a fully masked condition is something the model saw during training.

The token layout is declared once, in ModelConfig: the sequence is [audio, image], each row-major,
and each modality has its own embedding table of size C + 1 whose last id C is that modality's
[MASK]. Tags: "paper" = stated in the paper, "fixed here" = our choice (SPEC.md). The extensions
beyond the paper are the last block of ModelConfig, each off by default; their hooks are marked
"extension" where the paper's code calls them, and their code is the section "Extensions" at the end.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from util import torch_load

MODALITIES = ('audio', 'image')  # the order of the sequence (paper: [f_a, f_v])


@dataclass
class ModelConfig:
    # token layout (SPEC 1): grids and codebook sizes come from the dataset's meta.json
    audio_grid_h: int = 5      # mel frequency rows of the SpecVQGAN codebook (80 mels / 16)
    audio_grid_w: int = 53     # time columns (848 frames / 16)
    audio_codebook_size: int = 1024
    image_grid_h: int = 16     # 256 px / 16
    image_grid_w: int = 16
    image_codebook_size: int = 1024
    # transformer (paper: the ViT-L of MAE/MAGE)
    n_layer: int = 24
    n_head: int = 16
    n_embd: int = 1024
    decoder_n_layer: int = 8
    decoder_n_head: int = 16
    decoder_n_embd: int = 1024
    dropout: float = 0.1       # attention and MLP dropout (fixed here, as MAGE)
    bias: bool = True
    # training corruption (SPEC 2)
    mask_ratio_mu: float = 0.7    # paper: mean of the truncated Gaussian (0.55 in ablations)
    mask_ratio_std: float = 0.25  # fixed here, as MAGE
    mask_ratio_min: float = 0.2   # paper: truncation bounds [0.2, 1]
    mask_ratio_max: float = 1.0
    drop_ratio: float = 0.5       # paper: half of each modality's positions skip the encoder
    label_smoothing: float = 0.1  # fixed here, as MAGE
    # ---- extensions (fixed here): the defaults are the paper; config/toy.py and config/pairs.py turn them on
    given_prob: float = 0.0          # share of samples with one modality left whole (docs/training.md)
    null_prob: float = 0.0           # share of samples with one modality fully masked (docs/training.md)
    embedding_init: str = 'random'   # 'codes': rows start from the tokenizer's code vectors (docs/training.md)
    audio_global_codes: int = 0      # K: the last K ids name a whole item, at one position first (docs/units.md)
    image_global_codes: int = 0
    global_broadcast: bool = False   # a known global id is added to every position of its modality (docs/units.md)
    global_loss_weight: float = 1.0  # the loss weight of a masked global token (docs/units.md)

    @property
    def audio_len(self):
        return self.global_tokens('audio') + self.audio_grid_h * self.audio_grid_w

    @property
    def image_len(self):
        return self.global_tokens('image') + self.image_grid_h * self.image_grid_w

    @property
    def seq_len(self):
        return self.audio_len + self.image_len

    @property
    def audio_mask_id(self):
        return self.audio_codebook_size  # the last row of the audio embedding table

    @property
    def image_mask_id(self):
        return self.image_codebook_size

    def length(self, modality):
        return getattr(self, f'{modality}_len')

    def mask_id(self, modality):
        return getattr(self, f'{modality}_mask_id')

    def global_tokens(self, modality):
        """Positions before the modality's grid: 1 with global codes (extension), else 0."""
        return int(getattr(self, f'{modality}_global_codes') > 0)


# ----------------------------------------------------------------------------------------------
# Transformer blocks (pre-LayerNorm ViT, full bidirectional attention)

class SelfAttention(nn.Module):

    def __init__(self, width, n_head, dropout, bias):
        super().__init__()
        assert width % n_head == 0, f'width {width} is not divisible by {n_head} heads'
        self.n_head = n_head
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):

    def __init__(self, width, n_head, dropout, bias):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, bias=bias)
        self.attn = SelfAttention(width, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(width, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width, bias=bias), nn.GELU(),
                                 nn.Linear(4 * width, width, bias=bias), nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class OutputHead(nn.Module):
    """MAGE's head: Linear -> GELU -> LayerNorm, then a dot product with the modality's own
    embedding table (no vocabulary matrix of its own), plus a per-id bias."""

    def __init__(self, config, codebook_size):
        super().__init__()
        self.fc = nn.Linear(config.decoder_n_embd, config.n_embd, bias=config.bias)
        self.ln = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.bias = nn.Parameter(torch.zeros(codebook_size))
        self.codebook_size = codebook_size

    def forward(self, h, embedding_weight):
        h = self.ln(F.gelu(self.fc(h)))  # (B, L, n_embd)
        # rows [:C] only, so [MASK] can never be predicted; detached as in MAGE: the table is
        # trained by the input side alone and "acts as a mapping layer without extra training" (paper)
        table = embedding_weight[:self.codebook_size].detach()  # (C, n_embd)
        return h @ table.t().to(h.dtype) + self.bias  # (B, L, C)


# ----------------------------------------------------------------------------------------------
# The model

class VisualEchoes(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        D, Dd = config.n_embd, config.decoder_n_embd
        # one table per modality, C + 1 rows: id C is [MASK] (paper)
        self.audio_embedding = nn.Embedding(config.audio_codebook_size + 1, D)
        self.image_embedding = nn.Embedding(config.image_codebook_size + 1, D)
        # ---- encoder: learnable positional and modality embeddings (paper)
        self.encoder_pos = nn.Parameter(torch.zeros(1, config.seq_len, D))
        self.encoder_modality = nn.Parameter(torch.zeros(2, D))
        self.encoder = nn.ModuleList([Block(D, config.n_head, config.dropout, config.bias)
                                      for _ in range(config.n_layer)])
        self.encoder_norm = nn.LayerNorm(D, bias=config.bias)
        # ---- decoder: its own positional and modality embeddings, one shared mask embedding m
        self.encoder_to_decoder = nn.Linear(D, Dd, bias=config.bias)
        self.mask_embedding = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos = nn.Parameter(torch.zeros(1, config.seq_len, Dd))
        self.decoder_modality = nn.Parameter(torch.zeros(2, Dd))
        self.decoder = nn.ModuleList([Block(Dd, config.decoder_n_head, config.dropout, config.bias)
                                      for _ in range(config.decoder_n_layer)])
        self.decoder_norm = nn.LayerNorm(Dd, bias=config.bias)
        self.audio_head = OutputHead(config, config.audio_codebook_size)
        self.image_head = OutputHead(config, config.image_codebook_size)
        # which modality each sequence position belongs to: 0 audio, 1 image (a fixed table, not a parameter)
        modality_of_position = torch.cat([torch.zeros(config.audio_len, dtype=torch.long),
                                          torch.ones(config.image_len, dtype=torch.long)])
        self.register_buffer('modality_of_position', modality_of_position, persistent=False)
        self.apply(self._init_weights)
        for p in (self.encoder_pos, self.encoder_modality, self.decoder_pos, self.decoder_modality,
                  self.mask_embedding):
            nn.init.normal_(p, std=0.02)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward_encoder(self, audio, image, keep=None):
        """audio (B, La), image (B, Lv) ids; keep (B, K) sequence positions the encoder sees, or
        None for all (inference). Returns (B, K, D) (K = La + Lv when keep is None)."""
        x = torch.cat([self.audio_embedding(audio), self.image_embedding(image)], dim=1)  # (B, L, D)
        x = x + self.encoder_pos + self.encoder_modality[self.modality_of_position]
        if self.config.global_broadcast:  # extension (docs/units.md)
            x = x + broadcast_global(self, audio, image)
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.size(-1)))  # (B, K, D)
        for block in self.encoder:
            x = block(x)
        return self.encoder_norm(x)

    def forward_decoder(self, x, keep, masked):
        """x (B, K, D) encoder output at the positions `keep` (None: all); masked (B, L) bool.
        Every dropped and every masked position gets the shared mask embedding m (paper, Fig. 1).
        Returns (audio_logits (B, La, Ca), image_logits (B, Lv, Cv))."""
        x = self.encoder_to_decoder(x)  # (B, K, Dd)
        B, L = masked.shape
        m = self.mask_embedding.to(x.dtype)
        if keep is not None:  # put encoder outputs back at their positions, m everywhere else
            x = m.expand(B, L, -1).scatter(1, keep.unsqueeze(-1).expand(-1, -1, x.size(-1)), x)  # (B, L, Dd)
        x = torch.where(masked.unsqueeze(-1), m, x)
        x = x + self.decoder_pos + self.decoder_modality[self.modality_of_position]
        for block in self.decoder:
            x = block(x)
        x = self.decoder_norm(x)
        La = self.config.audio_len
        return (self.audio_head(x[:, :La], self.audio_embedding.weight),
                self.image_head(x[:, La:], self.image_embedding.weight))

    def forward(self, audio, image, keep=None, targets=None):
        """audio (B, La), image (B, Lv) int64 ids holding the [MASK] id where masked.
        keep: (B, K) positions the encoder sees, or None for all. targets: (audio_targets,
        image_targets) ids with -1 where no loss, or None.
        Returns (audio_logits, image_logits), losses ({'loss', 'audio', 'image'} or None)."""
        cfg = self.config
        masked = torch.cat([audio == cfg.audio_mask_id, image == cfg.image_mask_id], dim=1)  # (B, L)
        logits = self.forward_decoder(self.forward_encoder(audio, image, keep), keep, masked)
        if targets is None:
            return logits, None
        losses = {m: masked_cross_entropy(lg, tg, cfg.label_smoothing, position_weights(cfg, m, audio.device))
                  for m, lg, tg in zip(MODALITIES, logits, targets)}
        losses['loss'] = losses['audio'] + losses['image']  # Eq. 1: the sum over both modalities
        return logits, losses

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # decay only the weights of Linear layers: not norms, biases, embeddings (fixed here, as MAGE)
        linear_weights = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        decay = [p for p in self.parameters() if id(p) in linear_weights]
        no_decay = [p for p in self.parameters() if id(p) not in linear_weights]
        groups = [{'params': decay, 'weight_decay': weight_decay},
                  {'params': no_decay, 'weight_decay': 0.0}]
        fused = device_type == 'cuda'  # the fused kernel is fastest where it exists
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def flops_per_forward(self, drop_ratio=0.0):
        """FLOPs (matmuls only) of one forward of one sequence: the encoder sees all but drop_ratio
        of each modality's positions (training: config.drop_ratio; inference: 0, SPEC 3), the
        decoder every position."""
        cfg = self.config
        kept = sum(cfg.length(m) - round(drop_ratio * cfg.length(m)) for m in MODALITIES)

        def stack(n_layer, T, W):  # qkv + proj + MLP = 24 T W^2, attention scores and mix = 4 T^2 W
            return n_layer * (24 * T * W * W + 4 * T * T * W)
        heads = 2 * cfg.seq_len * cfg.decoder_n_embd * cfg.n_embd + 2 * (
            cfg.audio_len * cfg.audio_codebook_size + cfg.image_len * cfg.image_codebook_size) * cfg.n_embd
        return (stack(cfg.n_layer, kept, cfg.n_embd) + 2 * kept * cfg.n_embd * cfg.decoder_n_embd
                + stack(cfg.decoder_n_layer, cfg.seq_len, cfg.decoder_n_embd) + heads)

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops=312e12):
        """Model FLOPs utilization: achieved training FLOP/s (forward with training's drop; backward
        costs twice the forward) over peak_flops (an A100's bf16 by default; bench.py measures yours)."""
        return 3 * self.flops_per_forward(self.config.drop_ratio) * fwdbwd_per_iter / dt / peak_flops


def masked_cross_entropy(logits, targets, label_smoothing, weights=None):
    """Cross-entropy over positions whose target is not -1, in float32; weights (L,) scale each
    position's term (None: the plain mean)."""
    if not (targets >= 0).any():  # nothing masked: a zero that still depends on the graph
        return logits.sum() * 0.0
    if weights is None:
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1,
                               label_smoothing=label_smoothing)
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-1, reduction='none',
                         label_smoothing=label_smoothing)  # (B, L), 0 where no target
    return (ce * weights).sum() / (targets >= 0).sum()


# ----------------------------------------------------------------------------------------------
# Training corruption (SPEC 2): torch RNG only, exact counts, per sample and per modality

def truncated_normal(n, mu, std, low, high, generator=None, device=None):
    """n draws from N(mu, std^2) truncated to [low, high], by inverting the CDF (no rejection loop)."""
    def cdf(x):
        return 0.5 * (1 + math.erf((x - mu) / (std * math.sqrt(2))))
    u = cdf(low) + torch.rand(n, generator=generator, device=device) * (cdf(high) - cdf(low))
    return (mu + std * torch.special.ndtri(u)).clamp(low, high)  # clamp: float rounding only


def random_positions(n_chosen, B, L, generator=None, device=None):
    """(B, L) bool with exactly n_chosen[b] random True positions in row b (MAE's argsort trick)."""
    noise = torch.rand(B, L, generator=generator, device=device)
    rank = noise.argsort(dim=1).argsort(dim=1)  # (B, L) a random permutation per row
    return rank < n_chosen.unsqueeze(1)


def random_corruption(audio, image, config, generator=None):
    """Mask and drop, independently per sample and per modality (paper; SPEC 2).
    audio (B, La), image (B, Lv) clean ids. Returns (audio_in, image_in, keep, targets):
    inputs with [MASK] at masked positions, keep (B, K) sorted positions the encoder sees,
    targets (audio, image) with -1 at positions that are not masked."""
    inputs, targets, keeps, offset = [], [], [], 0
    whole, emptied = whole_or_emptied(audio.size(0), config, generator, audio.device)  # extension
    for m, (ids, mask_id) in enumerate(((audio, config.audio_mask_id), (image, config.image_mask_id))):
        B, L = ids.shape
        ratio = truncated_normal(B, config.mask_ratio_mu, config.mask_ratio_std, config.mask_ratio_min,
                                 config.mask_ratio_max, generator, ids.device)  # (B,)
        n_masked = torch.ceil(ratio * L).long().clamp(1, L)  # ceil(r * L) (SPEC 2)
        if whole is not None:  # extension (docs/training.md): some samples keep a modality whole or lose it all
            n_masked = torch.where(whole[m], 0, torch.where(emptied[m], L, n_masked))
        masked = random_positions(n_masked, B, L, generator, ids.device)  # (B, L)
        inputs.append(ids.masked_fill(masked, mask_id))
        targets.append(ids.masked_fill(~masked, -1))
        # drop: n_drop random positions, drawn independently of the mask (paper, Fig. 1)
        noise = torch.rand(B, L, generator=generator, device=ids.device)
        n_drop = round(config.drop_ratio * L)
        keeps.append(noise.argsort(dim=1)[:, n_drop:].sort(dim=1).values + offset)  # (B, L - n_drop)
        offset += L
    return inputs[0], inputs[1], torch.cat(keeps, dim=1), tuple(targets)


# ----------------------------------------------------------------------------------------------
# Generation: iterative unmasking (MaskGIT, paper appendix A.2) with classifier-free guidance.
# Every task is the same loop; they differ only in which positions start as [MASK].

_CONFIDENCE_OF_KNOWN_TOKENS = float('inf')  # given tokens must never be re-masked, whatever the noise


def mask_schedule(ratio):
    """Fraction of the initially unknown tokens still masked after a fraction `ratio` of the steps:
    the cosine schedule (paper; MaskGIT's default)."""
    return math.cos(math.pi / 2 * ratio)


def gumbel_noise(shape, generator=None, device=None):
    u = torch.rand(shape, generator=generator, device=device).clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def mask_by_random_topk(n_mask, confidence, temperature, generator=None):
    """Re-mask exactly n_mask[b] positions of row b: those of lowest confidence after adding
    Gumbel noise scaled by `temperature` (which anneals to 0, so late steps trust the model).
    confidence (B, L) log p of the sampled ids, +inf where known. Returns (B, L) bool."""
    noisy = confidence + temperature * gumbel_noise(confidence.shape, generator, confidence.device)
    rank = noisy.argsort(dim=1).argsort(dim=1)  # 0 = least confident; ranks break ties, so counts are exact
    return rank < n_mask.unsqueeze(1)


def remove_condition(audio, image, condition, config):
    """The unconditional input of classifier-free guidance: the condition modality fully [MASK]."""
    if condition == 'image':
        return audio, torch.full_like(image, config.image_mask_id)
    if condition == 'audio':
        return torch.full_like(audio, config.audio_mask_id), image
    raise ValueError(f'condition must be "image" or "audio", not {condition!r}')


# On a CPU, forwards of at most this many tokens (8 sequences of the paper's 521): larger activations pass
# glibc's 32 MB mmap threshold and are page-faulted in afresh at every use (measured: 18% less CPU).
_CPU_FORWARD_TOKENS = 4200


def model_logits(model, audio, image):
    """model(audio, image) logits, the batch in chunks of at most _CPU_FORWARD_TOKENS tokens on a CPU
    (each sequence's logits depend on that sequence alone, so chunks change nothing but speed)."""
    n = max(1, _CPU_FORWARD_TOKENS // (audio.size(1) + image.size(1))) if audio.device.type == 'cpu' else len(audio)
    if n >= len(audio):
        return model(audio, image)[0]
    chunks = [model(a, v)[0] for a, v in zip(audio.split(n), image.split(n))]
    return tuple(torch.cat(lg) for lg in zip(*chunks))  # (2B, L_m, C_m) per modality


def guided_logits(model, audio, image, condition=None, guidance_scale=1.0):
    """Logits for both modalities, with classifier-free guidance in logit space (paper Eq. 2):
    s * logits(x | condition) + (1 - s) * logits(x | condition masked), the two passes as one
    batch. s = 1 (or no condition) is the plain conditional pass; s may be a (B,) tensor, one
    scale per sample (guidance_at)."""
    if condition is None or (not torch.is_tensor(guidance_scale) and guidance_scale == 1.0):
        return model_logits(model, audio, image)
    return combine_guidance(*both_passes(model, audio, image, condition), guidance_scale)


def both_passes(model, audio, image, condition):
    """(conditional logits, unconditional logits), each a tuple over modalities, as one batch."""
    null_audio, null_image = remove_condition(audio, image, condition, model.config)
    logits = model_logits(model, torch.cat([audio, null_audio]), torch.cat([image, null_image]))
    B = audio.size(0)
    return tuple(lg[:B] for lg in logits), tuple(lg[B:] for lg in logits)


def combine_guidance(conditional, unconditional, guidance_scale):
    """s * conditional + (1 - s) * unconditional per modality, in float32; s a number or (B,)."""
    s = guidance_scale.view(-1, 1, 1) if torch.is_tensor(guidance_scale) else guidance_scale
    return tuple(s * c.float() + (1 - s) * u.float() for c, u in zip(conditional, unconditional))


def sample_ids(log_probs, temperature, generator=None):
    """One draw per position from softmax(log_probs / temperature) (Gumbel-max); 0 = argmax."""
    if temperature == 0:
        return log_probs.argmax(dim=-1)
    noise = gumbel_noise(log_probs.shape, generator, log_probs.device)
    return (log_probs / temperature + noise).argmax(dim=-1)


def unmask_step(ids, logits, mask_id, n_unknown0, step, num_iter, temperature, choice_temperature,
                generator=None):
    """One iteration for one modality. ids (B, L) current ids, [MASK] where unknown; n_unknown0
    (B,) unknown counts at the start. Returns the new ids: every unknown position sampled, then
    the least confident ones re-masked so the cosine schedule's count stays masked."""
    unknown = ids == mask_id  # (B, L)
    log_probs = logits.float().log_softmax(dim=-1)  # float32 even under bf16 autocast
    sampled = torch.where(unknown, sample_ids(log_probs, temperature, generator), ids)
    ratio = (step + 1) / num_iter
    if step == num_iter - 1:  # the last step keeps every sample: no [MASK] left
        return sampled
    confidence = log_probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)  # log p(sampled id)
    confidence = confidence.masked_fill(~unknown, _CONFIDENCE_OF_KNOWN_TOKENS)
    n_unknown = unknown.sum(dim=1)  # (B,) per sample: rows may differ (inpainting)
    n_mask = torch.floor(n_unknown0 * mask_schedule(ratio)).long()
    # keep at least one masked for a later step, and unmask at least one now
    n_mask = torch.maximum(torch.minimum(n_mask, n_unknown - 1), torch.ones_like(n_mask))
    n_mask = torch.where(n_unknown > 0, n_mask, torch.zeros_like(n_mask))
    remask = mask_by_random_topk(n_mask, confidence, choice_temperature * (1 - ratio), generator)
    return sampled.masked_fill(remask, mask_id)


@torch.no_grad()
def generate(model, audio, image, num_iter=30, temperature=1.0, choice_temperature=9.0,
             guidance_scale=3.0, condition=None, generator=None, progress=False, guidance_fade=0.0,
             uncond_every=1):
    """Fill every [MASK] of audio (B, La) and image (B, Lv) in num_iter steps (paper defaults:
    N 30, T 9, s 3, guidance constant: fade 0). Given ids are never changed. condition: the
    modality guidance removes ('image' for image->audio, 'audio' for audio->image, None for
    co-generation: no guidance). Each modality keeps its own per-sample schedule. Returns
    (audio, image) ids, no [MASK] left. Extension (docs/sampling.md), off by default: uncond_every
    k > 1 runs guidance's unconditional pass every k-th step and reuses its logits between."""
    cfg = model.config
    ids = {'audio': audio.clone(), 'image': image.clone()}
    n_unknown0 = {m: (ids[m] == cfg.mask_id(m)).sum(dim=1) for m in MODALITIES}  # (B,) each
    # which modalities have anything to fill, read from the device once, here: inside the loop
    # every step would wait for the GPU to finish before queueing the next forward
    todo = [m for m in MODALITIES if n_unknown0[m].any()]
    allowed = {m: allowed_ids(cfg, m, ids[m].device) for m in MODALITIES}  # extension: None without global codes
    steps = range(num_iter)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc='unmasking', leave=False)
    target = {'image': 'audio', 'audio': 'image'}.get(condition)
    reused = None  # extension: the unconditional logits of the last step that ran that pass
    for step in steps:
        scale = guidance_scale
        if target is not None and guidance_fade:  # extension (docs/guidance.md): guidance fades as the target fills
            share_masked = (ids[target] == cfg.mask_id(target)).sum(dim=1) / n_unknown0[target].clamp_min(1)
            scale = guidance_at(guidance_scale, share_masked, guidance_fade)
        if uncond_every > 1 and target is not None:  # extension (docs/sampling.md)
            logits, reused = guided_logits_reusing(model, ids['audio'], ids['image'], condition, scale,
                                                   reused if step % uncond_every else None)
        else:
            logits = guided_logits(model, ids['audio'], ids['image'], condition, scale)
        logits = dict(zip(MODALITIES, logits))
        for m in todo:
            if allowed[m] is not None:  # extension (docs/units.md): global ids first, grid ids after
                logits[m] = logits[m].float().masked_fill(~allowed[m], float('-inf'))
            ids[m] = unmask_step(ids[m], logits[m], cfg.mask_id(m), n_unknown0[m], step, num_iter,
                                 temperature, choice_temperature, generator)
    return ids['audio'], ids['image']


def masked_like(ids_or_batch, length, mask_id, device):
    B = ids_or_batch if isinstance(ids_or_batch, int) else ids_or_batch.size(0)
    return torch.full((B, length), mask_id, dtype=torch.long, device=device)


def image_to_audio(model, image, **kw):
    """image (B, Lv) ids -> audio (B, La) ids, guided by the image (the paper's main task)."""
    cfg = model.config
    audio = masked_like(image, cfg.audio_len, cfg.audio_mask_id, image.device)
    return generate(model, audio, image, condition='image', **kw)[0]


def audio_to_image(model, audio, **kw):
    """audio (B, La) ids -> image (B, Lv) ids, guided by the sound."""
    cfg = model.config
    image = masked_like(audio, cfg.image_len, cfg.image_mask_id, audio.device)
    return generate(model, audio, image, condition='audio', **kw)[1]


def cogenerate(model, batch_size, device='cpu', **kw):
    """Both modalities from nothing, unmasked together (no guidance: there is no condition)."""
    cfg = model.config
    kw.pop('guidance_scale', None)
    return generate(model, masked_like(batch_size, cfg.audio_len, cfg.audio_mask_id, device),
                    masked_like(batch_size, cfg.image_len, cfg.image_mask_id, device),
                    condition=None, guidance_scale=1.0, **kw)


def inpaint_audio(model, audio, image, first_col, last_col, **kw):
    """Regenerate audio token columns [first_col, last_col) (every frequency row) given the rest
    of the sound and the image. audio (B, La), image (B, Lv) ids. Returns audio (B, La)."""
    cfg = model.config
    audio = audio.clone()
    grid = audio[:, cfg.global_tokens('audio'):].view(-1, cfg.audio_grid_h, cfg.audio_grid_w)  # (B, h, w), a view
    grid[:, :, first_col:last_col] = cfg.audio_mask_id  # frequency x time; a global token stays as given
    return generate(model, audio, image, condition='image', **kw)[0]


def continue_audio(model, image, n_windows, overlap_cols, first_window=None, **kw):
    """A sound longer than the model's clip, window by window under the same image: each window
    starts with the previous window's last `overlap_cols` columns given, the rest generated.
    image (B, Lv) ids; first_window (B, La) ids to continue from, or None to generate it.
    Returns a list of n_windows (B, La) id tensors; window k > 0 repeats the previous window's
    last overlap_cols columns as its first ones (drop them when stitching)."""
    cfg = model.config
    h, w, g = cfg.audio_grid_h, cfg.audio_grid_w, cfg.global_tokens('audio')
    if not 0 < overlap_cols < w:
        raise ValueError(f'overlap_cols must be in 1..{w - 1}, not {overlap_cols}')
    windows = [first_window if first_window is not None else image_to_audio(model, image, **kw)]
    for _ in range(n_windows - 1):
        audio = torch.full_like(windows[-1], cfg.audio_mask_id)  # (B, La); a global token is made anew
        grid, previous = (x[:, g:].view(-1, h, w) for x in (audio, windows[-1]))  # (B, h, w) views
        grid[:, :, :overlap_cols] = previous[:, :, w - overlap_cols:]
        windows.append(generate(model, audio, image, condition='image', **kw)[0])
    return windows

# ----------------------------------------------------------------------------------------------
# Loading a trained checkpoint (sample.py, evaluate.py)

def load_model(path, device='cpu'):
    """Rebuild the model from a train.py checkpoint. Returns (model in eval mode, checkpoint dict)."""
    try:  # one-line errors for a truncated file and for one that needs unpickling
        checkpoint = torch_load(path)
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: no such checkpoint (train one with train.py)') from None
    if not isinstance(checkpoint, dict) or 'model_args' not in checkpoint or 'model' not in checkpoint:
        raise ValueError(f'{path}: not a visual-echoes checkpoint (no model/model_args)')
    try:
        model = VisualEchoes(ModelConfig(**checkpoint['model_args']))
        model.load_state_dict(checkpoint['model'])
    except (TypeError, RuntimeError) as e:  # unknown config keys, other shapes
        raise ValueError(f'{path}: its model does not fit this code ({str(e).strip().splitlines()[0][:160]})') from None
    return model.to(device).eval(), checkpoint


# ----------------------------------------------------------------------------------------------
# Diagnostics (fixed here): does the model use the other modality? (train.py's eval, evaluate.py)

def majority_codes(train_audio, train_image, max_items=10_000):
    """{modality: its most frequent id} in (up to max_items rows of) the train token arrays: the
    masked-token accuracy of a model that predicts it everywhere (a collapsed run shows equal)."""
    return {m: int(torch.as_tensor(a[:max_items].astype('int64')).flatten().bincount().argmax())
            for m, a in zip(MODALITIES, (train_audio, train_image))}


def masked_token_counts(logits, targets, majority):
    """Per modality, over the masked positions of one batch (targets >= 0): (right argmax predictions,
    positions holding the majority code `majority[m]`, masked positions)."""
    counts = {}
    for m, lg, tg in zip(MODALITIES, logits, targets):
        masked = tg >= 0
        counts[m] = ((lg.argmax(-1)[masked] == tg[masked]).sum().item(), (tg[masked] == majority[m]).sum().item(),
                     masked.sum().item())
    return counts


@torch.no_grad()
def cross_modal_losses(model, audio, image):
    """Cross-entropy (nats per token, no smoothing) of each modality fully masked, the other given or
    masked too. The gain, 'alone' minus 'given', is what the other modality tells the model: near 0
    for one that ignores it. Returns {'audio_given', 'audio_alone', 'image_given', 'image_alone'}."""
    cfg = model.config
    no_audio = torch.full_like(audio, cfg.audio_mask_id)
    no_image = torch.full_like(image, cfg.image_mask_id)
    # one batch of three: (sound masked, picture given), (sound given, picture masked), both masked
    logits_a, logits_v = model(torch.cat([no_audio, audio, no_audio]), torch.cat([image, no_image, no_image]))[0]
    ce = lambda lg, ids: F.cross_entropy(lg.float().flatten(0, 1), ids.flatten()).item()
    B = audio.size(0)
    return {'audio_given': ce(logits_a[:B], audio), 'audio_alone': ce(logits_a[2 * B:], audio),
            'image_given': ce(logits_v[B:2 * B], image), 'image_alone': ce(logits_v[2 * B:], image)}


# ----------------------------------------------------------------------------------------------
# Extensions (fixed here; each is off with ModelConfig's defaults, so the code above is the paper's)

def whole_or_emptied(B, config, generator=None, device=None):
    """given_prob / null_prob (docs/training.md): per sample, whether one modality is left whole (as
    a condition is at inference) or fully masked (as in guidance's unconditional pass). Returns
    (whole, emptied), each (2, B) bool, row 0 audio, row 1 image; (None, None) when both shares are 0
    (then nothing is drawn, so the paper's masking stays bit-exact)."""
    if not (config.given_prob or config.null_prob):
        return None, None
    u = torch.rand(B, generator=generator, device=device)
    mode = (u >= 1 - config.given_prob - config.null_prob).long() + (u >= 1 - config.null_prob).long()  # (B,) 0, 1, 2
    chosen = torch.rand(B, generator=generator, device=device) < 0.5  # (B,) True: the audio is the one
    this = torch.stack([chosen, ~chosen])  # (2, B) the modality each sample leaves whole or empties
    return this & (mode == 1), this & (mode == 2)


@torch.no_grad()
def init_embeddings_from_codes(model, modality, vectors):
    """embedding_init='codes' (docs/training.md): rows [:C] of the modality's table <- its tokenizer's
    code vectors (C, d) (a k-means centroid, a unit's centroid), projected onto their top principal
    directions and scaled to the table's init std (0.02); columns past d keep their random init."""
    table = getattr(model, f'{modality}_embedding').weight[:-1]  # (C, D), the [MASK] row stays random
    if vectors.dim() != 2 or vectors.shape[0] != table.shape[0]:
        raise ValueError(f"{modality} code vectors: expected ({table.shape[0]}, d), got {tuple(vectors.shape)}")
    v = vectors.float().cpu()
    v = v - v.mean(0)
    U, S, _ = torch.linalg.svd(v, full_matrices=False)
    k = min(table.shape[1], S.numel())
    e = U[:, :k] * S[:k]  # (C, k) principal components, largest first
    table[:, :k] = (e / e.std().clamp_min(1e-8) * 0.02).to(table)


def allowed_ids(config, modality, device=None):
    """Global codes (docs/units.md): (L, C) bool, the ids each position may take in generation (the
    last K ids at the global position first, the others in the grid), or None without global codes."""
    K, C = getattr(config, f'{modality}_global_codes'), getattr(config, f'{modality}_codebook_size')
    if not K:
        return None
    allowed = torch.zeros(config.length(modality), C, dtype=torch.bool, device=device)
    allowed[0, C - K:], allowed[1:, :C - K] = True, True
    return allowed


def broadcast_global(model, audio, image):
    """global_broadcast (docs/units.md): (B, L, D), each modality's global id embedding at all of
    that modality's positions (zero where it is [MASK] or the modality has no global token)."""
    out = []
    for m, ids in zip(MODALITIES, (audio, image)):
        embedding = getattr(model, f'{m}_embedding')
        if model.config.global_tokens(m):
            known = (ids[:, :1] != model.config.mask_id(m)).unsqueeze(-1)  # (B, 1, 1)
            out.append((embedding(ids[:, :1]) * known).expand(-1, ids.size(1), -1))
        else:
            out.append(embedding.weight.new_zeros(ids.size(0), ids.size(1), embedding.weight.size(1)))
    return torch.cat(out, 1)


def position_weights(config, modality, device=None):
    """global_loss_weight (docs/units.md): (L,) loss weights of a modality's positions, the global
    token's first, or None when all are 1 (the paper)."""
    if not config.global_tokens(modality) or config.global_loss_weight == 1.0:
        return None
    weights = torch.ones(config.length(modality), device=device)
    weights[0] = config.global_loss_weight
    return weights


def guidance_at(guidance_scale, share_masked, fade):
    """Guidance that fades (docs/guidance.md): this step's scale s_t = 1 + (s - 1) * share_masked ** fade,
    share_masked (B,) the part of the target's unknown tokens still [MASK]; fade 0 is the paper's
    constant s. Guidance sets the first tokens, which decide what the target will be, and steps back
    as the target fills, where s > 1 would only amplify the difference of two nearly equal passes."""
    if fade == 0 or guidance_scale == 1.0:
        return guidance_scale
    return 1.0 + (guidance_scale - 1.0) * share_masked.float().pow(fade)


def forwards_per_sample(num_iter, guided, uncond_every=1, **_):
    """Sequences one sample sends through the model in generate: one a step, plus guidance's
    unconditional pass on the steps that run it (every step in the paper's loop)."""
    return num_iter + (-(-num_iter // uncond_every) if guided else 0)


def guided_logits_reusing(model, audio, image, condition, guidance_scale, unconditional=None):
    """uncond_every (docs/sampling.md): guided logits from this step's conditional pass and the given
    unconditional logits of an earlier step; None runs both passes (exactly guided_logits). Returns
    (guided logits, the unconditional logits used)."""
    if not torch.is_tensor(guidance_scale) and guidance_scale == 1.0:  # no guidance: no unconditional pass
        return model_logits(model, audio, image), unconditional
    if unconditional is None:
        conditional, unconditional = both_passes(model, audio, image, condition)
    else:
        conditional = model_logits(model, audio, image)
    return combine_guidance(conditional, unconditional, guidance_scale), unconditional
