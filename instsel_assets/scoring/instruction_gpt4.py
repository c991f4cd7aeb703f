"""InstructionGPT-4 (Wei et al. 2023, "InstructionGPT-4: A 200-Instruction Paradigm for Fine-Tuning MiniGPT-4"),
text form: a small trainable data selector learned from subset-level quality labels.

The rule. Each row ``x`` is described by a feature vector: its indicators (standardised over the pool) concatenated
with its embedding reduced by PCA. A selector network ``f`` maps a row's features to a scalar score. The selector
is trained on fine-tuning experiments: for each subset ``S_k`` with quality label ``q_k`` (here ``-eval_loss`` of
the model fine-tuned on it, standardised over the subsets, so higher is better), the subset's predicted quality is
the MEAN OF ITS ROWS' SCORES and the training loss is

    MSE( mean_{x in S_k} f(x),  q_k )      over the subsets,

as in the paper's reference selector, whose per-row outputs are averaged over each subset and compared with the
subset's evaluation score by mean squared error. Once trained, ``f`` scores every row of the pool
(``instruction_gpt4_score``, in the label's standardised units, HIGHER IS BETTER) and the selector keeps the
top-m rows.

Differences from the paper, on purpose:

- text only: the paper's features are CLIP score, GPT-4 score, length and reward score plus PCA-reduced CLIP
  image and text embeddings of multimodal (image, instruction) pairs; here they are the text indicators of
  docs/METHODS.md Family 1 (tokens, TTR, MTLD, KNN-6 distance, response perplexity, reward score: whichever the
  tables hold, or a configured list) plus the PCA-reduced MiniLM instruction embedding;
- the selector is a one-hidden-layer MLP (tanh), not the paper's stacked self-attention layers over the rows:
  a row's score does not depend on the other rows of its subset;
- the quality label is the standardised negative held-out loss, not the paper's benchmark scores; the
  subsets are the random subsets of ``training.subset_experiments``, not the paper's clusters;
- training is full-batch Adam with weight decay, keeping the weights of the lowest training loss (as the reference
  code intends); the standardisation of the indicators and the PCA are fitted on the whole pool (unsupervised).
  With few subsets the network is heavily under-determined: raise the number of subsets for real runs.

Missing indicator values are imputed with the pool mean (0 after standardisation) and a missing embedding with the
mean embedding; imputed rows are counted (``n_rows_imputed``).

Registered scorer: ``instruction_gpt4`` (column ``instruction_gpt4_score``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.registry import register_scorer

DEFAULT_INDICATORS: tuple[str, ...] = (
    "instruction_tokens", "output_tokens", "ttr", "mtld", "knn6_mean_distance", "response_ppl", "reward_score")
# Heavy-tailed, non-negative indicators: log1p before standardising, so that one long row does not dominate.
LOG_INDICATORS: tuple[str, ...] = (
    "instruction_tokens", "input_tokens", "output_tokens", "total_tokens", "response_ppl", "n_turns",
    "instruction_chars", "input_chars", "output_chars")
SCORE_COLUMN = "instruction_gpt4_score"


def _embedding_matrix(values: Sequence[Any], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(matrix with NaN rows where a value is missing or malformed, mask of present rows)."""
    present = []
    vectors = []
    for v in values:
        arr = None if v is None else np.asarray(v, dtype="float64").ravel()
        ok = arr is not None and arr.size > 0 and np.isfinite(arr).all() and (dim is None or arr.size == dim)
        if ok and dim is None:
            dim = arr.size
        present.append(bool(ok))
        vectors.append(arr if ok else None)
    dim = dim or 0
    out = np.full((len(vectors), dim), np.nan)
    for i, arr in enumerate(vectors):
        if arr is not None and arr.size == dim:
            out[i] = arr
        else:
            present[i] = False
    return out, np.asarray(present, dtype=bool)


@dataclass
class RowFeaturizer:
    """Per-row features: standardised indicators (log1p first for ``log_indicators``), then the embedding projected
    on its first principal components, each component scaled to unit variance over the pool."""

    indicators: tuple[str, ...]
    log_indicators: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    embedding_column: str | None = None
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None  # (k, dim)
    pca_scale: np.ndarray | None = None  # (k,)
    explained_variance_ratio: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        return 0 if self.pca_components is None else int(self.pca_components.shape[0])

    @property
    def feature_names(self) -> list[str]:
        return [*self.indicators, *[f"pc{k + 1}" for k in range(self.n_components)]]

    def _indicator_values(self, rows: pd.DataFrame) -> np.ndarray:
        x = rows[list(self.indicators)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
        for j, name in enumerate(self.indicators):
            if name in self.log_indicators:
                with np.errstate(invalid="ignore"):
                    x[:, j] = np.log1p(np.clip(x[:, j], 0.0, None))
        return x

    @classmethod
    def fit(cls, rows: pd.DataFrame, indicators: Sequence[str], *, n_components: int = 8,
            embedding_column: str | None = "embedding",
            log_indicators: Sequence[str] = LOG_INDICATORS) -> RowFeaturizer:
        """Fit the standardisation and the PCA on ``rows`` (the pool). ``n_components=0`` or
        ``embedding_column=None`` uses the indicators only; more components than the embeddings' rank are cut."""
        if n_components < 0:
            raise ValueError(f"n_components must be >= 0, got {n_components}")
        indicators = tuple(indicators)
        missing = [c for c in indicators if c not in rows.columns]
        if missing:
            raise ValueError(f"InstructionGPT-4: indicator column(s) {missing} are not in the rows")
        self = cls(indicators=indicators, log_indicators=tuple(c for c in indicators if c in set(log_indicators)),
                   mean=np.zeros(len(indicators)), std=np.ones(len(indicators)))
        x = self._indicator_values(rows)
        for j in range(len(indicators)):
            col = x[:, j][np.isfinite(x[:, j])]
            if len(col):
                self.mean[j] = col.mean()
                self.std[j] = col.std() if col.std() > 1e-12 else 1.0
        if n_components and embedding_column is not None:
            if embedding_column not in rows.columns:
                raise ValueError(f"InstructionGPT-4: embedding column {embedding_column!r} is not in the rows "
                                 f"(set n_components=0 to use the indicators only)")
            emb, present = _embedding_matrix(rows[embedding_column].tolist())
            if present.sum() >= 2:
                data = emb[present]
                center = data.mean(axis=0)
                _, sing, vt = np.linalg.svd(data - center, full_matrices=False)
                rank = int((sing > 1e-10 * max(1.0, float(sing[0]))).sum())
                k = min(int(n_components), rank)
                if k > 0:
                    comps = vt[:k].copy()
                    # a deterministic sign: the largest loading of each component is positive
                    flip = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
                    comps *= flip[:, None]
                    proj = (data - center) @ comps.T
                    scale = proj.std(axis=0)
                    scale[scale <= 1e-12] = 1.0
                    var = sing ** 2
                    self.embedding_column = embedding_column
                    self.pca_mean, self.pca_components, self.pca_scale = center, comps, scale
                    self.explained_variance_ratio = var[:k] / var.sum()
        return self

    def transform(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(features ``(n, len(feature_names))`` float32, mask of rows with an imputed value)."""
        missing = [c for c in self.indicators if c not in rows.columns]
        if missing:
            raise ValueError(f"InstructionGPT-4: the rows lack indicator column(s) {missing} the selector was "
                             f"trained on")
        z = (self._indicator_values(rows) - self.mean) / self.std
        imputed = ~np.isfinite(z).all(axis=1)
        z = np.where(np.isfinite(z), z, 0.0)
        parts = [z]
        if self.n_components:
            if self.embedding_column not in rows.columns:
                raise ValueError(f"InstructionGPT-4: the rows lack the embedding column {self.embedding_column!r}")
            emb, present = _embedding_matrix(rows[self.embedding_column].tolist(), dim=len(self.pca_mean))
            emb[~present] = self.pca_mean
            imputed |= ~present
            parts.append(((emb - self.pca_mean) @ self.pca_components.T) / self.pca_scale)
        return np.hstack(parts).astype("float32"), imputed

    def to_dict(self) -> dict[str, Any]:
        def lst(a):
            return None if a is None else np.asarray(a).tolist()

        return {"indicators": list(self.indicators), "log_indicators": list(self.log_indicators),
                "mean": lst(self.mean), "std": lst(self.std), "embedding_column": self.embedding_column,
                "pca_mean": lst(self.pca_mean), "pca_components": lst(self.pca_components),
                "pca_scale": lst(self.pca_scale), "explained_variance_ratio": lst(self.explained_variance_ratio)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RowFeaturizer:
        def arr(v):
            return None if v is None else np.asarray(v, dtype="float64")

        return cls(indicators=tuple(d["indicators"]), log_indicators=tuple(d["log_indicators"]), mean=arr(d["mean"]),
                   std=arr(d["std"]), embedding_column=d.get("embedding_column"), pca_mean=arr(d.get("pca_mean")),
                   pca_components=arr(d.get("pca_components")), pca_scale=arr(d.get("pca_scale")),
                   explained_variance_ratio=arr(d.get("explained_variance_ratio")))


def _mlp(n_features: int, hidden: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))


@dataclass
class InstructionGPT4Selector:
    """A trained selector: the featurizer, the MLP weights and how the training went."""

    featurizer: RowFeaturizer
    hidden: int
    state: dict[str, list]  # MLP state_dict as nested lists
    label_mean: float  # of -eval_loss over the subsets
    label_std: float
    curve: list[float] = field(default_factory=list)  # training MSE per epoch
    best_epoch: int = 0
    subset_ids: tuple[str, ...] = ()
    subset_labels: list[float] = field(default_factory=list)  # standardised
    subset_predictions: list[float] = field(default_factory=list)  # mean row score per subset, best weights
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return float(self.curve[self.best_epoch]) if self.curve else math.nan

    @property
    def subset_spearman(self) -> float:
        """Rank correlation between the subsets' predicted and true quality (in-sample)."""
        if len(self.subset_labels) < 2:
            return math.nan
        a = pd.Series(self.subset_predictions).rank().to_numpy()
        b = pd.Series(self.subset_labels).rank().to_numpy()
        if a.std() == 0 or b.std() == 0:
            return math.nan
        return float(np.corrcoef(a, b)[0, 1])

    def _module(self):
        import torch

        module = _mlp(len(self.featurizer.feature_names), self.hidden)
        module.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in self.state.items()})
        return module.eval()

    def score_rows(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(score of every row, mask of rows with an imputed feature)."""
        import torch

        x, imputed = self.featurizer.transform(rows)
        with torch.no_grad():
            scores = self._module()(torch.from_numpy(x)).squeeze(-1).double().numpy()
        return scores, imputed

    def to_dict(self) -> dict[str, Any]:
        return {"featurizer": self.featurizer.to_dict(), "hidden": self.hidden, "state": self.state,
                "label_mean": self.label_mean, "label_std": self.label_std, "curve": list(self.curve),
                "best_epoch": self.best_epoch, "subset_ids": list(self.subset_ids),
                "subset_labels": list(self.subset_labels), "subset_predictions": list(self.subset_predictions),
                "settings": dict(self.settings)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstructionGPT4Selector:
        return cls(featurizer=RowFeaturizer.from_dict(d["featurizer"]), hidden=int(d["hidden"]), state=d["state"],
                   label_mean=float(d["label_mean"]), label_std=float(d["label_std"]), curve=list(d["curve"]),
                   best_epoch=int(d["best_epoch"]), subset_ids=tuple(d["subset_ids"]),
                   subset_labels=list(d["subset_labels"]), subset_predictions=list(d["subset_predictions"]),
                   settings=dict(d.get("settings", {})))


def resolve_indicators(rows: pd.DataFrame, indicators: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(indicators used, defaults absent from ``rows``). ``None`` takes the available ones of
    ``DEFAULT_INDICATORS``; an explicit list must name columns of ``rows`` (``ValueError`` otherwise)."""
    if indicators is None:
        used = [c for c in DEFAULT_INDICATORS if c in rows.columns]
        return used, [c for c in DEFAULT_INDICATORS if c not in rows.columns]
    indicators = [str(c) for c in indicators]
    absent = [c for c in indicators if c not in rows.columns]
    if absent:
        raise ValueError(f"InstructionGPT-4: indicator(s) {absent} are not columns of the row table "
                         f"(columns: {sorted(map(str, rows.columns))})")
    if len(set(indicators)) != len(indicators):
        raise ValueError(f"InstructionGPT-4: indicators repeat in {indicators}")
    return indicators, []


def train_instruction_gpt4_selector(rows: pd.DataFrame, subsets: Mapping[str, Sequence[str]],
                                    eval_losses: Mapping[str, float], *, indicators: Sequence[str] | None = None,
                                    n_components: int = 8, embedding_column: str | None = "embedding",
                                    hidden: int = 32, epochs: int = 300, learning_rate: float = 1e-2,
                                    weight_decay: float = 1e-3, seed: int = 0,
                                    progress: Callable[[int, float], None] | None = None) -> InstructionGPT4Selector:
    """Train the selector on subset-level labels.

    ``rows``: the per-row table of the pool (``id``, the indicators, ``embedding_column``); ``subsets``:
    ``{subset id: member ids}``; ``eval_losses``: ``{subset id: evaluation loss}`` (the label is its negative,
    standardised over the subsets). ``progress(epoch, loss)`` is called every 50 epochs and after the last.
    ``ValueError`` for fewer than 2 subsets, a missing or non-finite loss, losses that do not vary, an empty
    subset, member ids not in ``rows``, or no feature at all.
    """
    import torch

    if epochs < 1:
        raise ValueError(f"InstructionGPT-4: epochs must be >= 1, got {epochs}")
    if hidden < 1:
        raise ValueError(f"InstructionGPT-4: hidden must be >= 1, got {hidden}")
    if not learning_rate > 0:
        raise ValueError(f"InstructionGPT-4: learning_rate must be > 0, got {learning_rate}")
    ids = [str(s) for s in subsets]
    if len(ids) < 2:
        raise ValueError(f"InstructionGPT-4: at least 2 subsets are needed to train the selector, got {len(ids)}")
    absent = [s for s in ids if s not in eval_losses]
    if absent:
        raise ValueError(f"InstructionGPT-4: no evaluation loss for subset(s) {absent}")
    loss = np.asarray([float(eval_losses[s]) for s in ids], dtype="float64")
    if not np.isfinite(loss).all():
        raise ValueError(f"InstructionGPT-4: subsets {[s for s, v in zip(ids, loss) if not math.isfinite(v)]} have "
                         f"a non-finite evaluation loss")
    quality = -loss
    label_mean, label_std = float(quality.mean()), float(quality.std())
    if label_std <= 1e-12 * max(1.0, abs(label_mean)):
        raise ValueError("InstructionGPT-4: the evaluation losses of the subsets do not vary: nothing to learn")
    labels = (quality - label_mean) / label_std

    if "id" not in rows.columns:
        raise ValueError("InstructionGPT-4: the row table needs an 'id' column")
    used, _ = resolve_indicators(rows, indicators)
    featurizer = RowFeaturizer.fit(rows, used, n_components=n_components, embedding_column=embedding_column)
    if not featurizer.feature_names:
        raise ValueError("InstructionGPT-4: no feature: no indicator column and no embedding")
    position = {str(i): k for k, i in enumerate(rows["id"].astype(str))}
    members = []
    for s in ids:
        m = [str(i) for i in subsets[s]]
        if not m:
            raise ValueError(f"InstructionGPT-4: subset {s} is empty")
        unknown = [i for i in m if i not in position]
        if unknown:
            raise ValueError(f"InstructionGPT-4: subset {s} has {len(unknown)} id(s) not in the row table, "
                             f"e.g. {unknown[:3]}")
        members.append([position[i] for i in m])
    used_rows = sorted({k for m in members for k in m})
    local = {k: j for j, k in enumerate(used_rows)}
    x, _ = featurizer.transform(rows.iloc[used_rows])
    averaging = np.zeros((len(ids), len(used_rows)), dtype="float32")
    for r, m in enumerate(members):
        for k in m:
            averaging[r, local[k]] += 1.0 / len(m)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a network this small only loses time to intra-op threading (5x on 2 busy cores)
    try:
        return _train(featurizer, x, averaging, labels, ids, used, label_mean, label_std, n_components=n_components,
                      hidden=hidden, epochs=epochs, learning_rate=learning_rate, weight_decay=weight_decay, seed=seed,
                      progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train(featurizer: RowFeaturizer, x: np.ndarray, averaging: np.ndarray, labels: np.ndarray, ids: list[str],
           used: list[str], label_mean: float, label_std: float, *, n_components: int, hidden: int, epochs: int,
           learning_rate: float, weight_decay: float, seed: int,
           progress: Callable[[int, float], None] | None) -> InstructionGPT4Selector:
    """Full-batch Adam on ``MSE(averaging @ f(x), labels)``, keeping the weights of the lowest loss."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _mlp(x.shape[1], hidden)
    features = torch.from_numpy(x)
    avg = torch.from_numpy(averaging)
    target = torch.tensor(labels, dtype=torch.float32)
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    curve: list[float] = []
    best, best_epoch, best_state = math.inf, 0, None
    module.train()
    for epoch in range(epochs):
        optimizer.zero_grad(set_to_none=True)
        subset_scores = avg @ module(features).squeeze(-1)  # the mean row score of every subset
        mse = torch.nn.functional.mse_loss(subset_scores, target)
        if not torch.isfinite(mse):
            raise FloatingPointError(f"InstructionGPT-4: non-finite training loss at epoch {epoch + 1}")
        value = float(mse.detach())
        curve.append(value)
        if value < best:  # the weights this loss was computed with, before the step
            best, best_epoch = value, epoch
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        mse.backward()
        optimizer.step()
        if progress is not None and ((epoch + 1) % 50 == 0 or epoch + 1 == epochs):
            progress(epoch + 1, value)
    module.load_state_dict(best_state)
    module.eval()
    with torch.no_grad():
        predictions = (avg @ module(features).squeeze(-1)).double().numpy()
    return InstructionGPT4Selector(
        featurizer=featurizer, hidden=hidden,
        state={k: v.tolist() for k, v in module.state_dict().items()},
        label_mean=label_mean, label_std=label_std, curve=curve, best_epoch=best_epoch, subset_ids=tuple(ids),
        subset_labels=labels.tolist(), subset_predictions=predictions.tolist(),
        settings={"indicators": list(used), "n_components": featurizer.n_components,
                  "n_components_requested": int(n_components), "hidden": hidden, "epochs": epochs,
                  "learning_rate": learning_rate, "weight_decay": weight_decay, "seed": seed,
                  "label": "-eval_loss, standardised over the subsets"})


@register_scorer(
    "instruction_gpt4",
    family="metric-set",
    paper="Wei et al. 2023, 'InstructionGPT-4: A 200-Instruction Paradigm for Fine-Tuning MiniGPT-4' (text form)",
    summary="A small MLP over per-row indicators and PCA-reduced embeddings, trained so that the mean score of a "
            "subset's rows matches the subset's quality (-eval_loss, standardised); its score of each row, higher "
            "is better.",
    writes=(SCORE_COLUMN,),
)
def instruction_gpt4_scores(rows: pd.DataFrame, selector: InstructionGPT4Selector | Mapping) -> pd.DataFrame:
    """``id`` and ``instruction_gpt4_score`` of every row of ``rows`` (same order) under a trained selector (or its
    ``to_dict()``). Rows with an imputed feature are scored and counted in ``out.attrs["n_rows_imputed"]``."""
    if not isinstance(selector, InstructionGPT4Selector):
        selector = InstructionGPT4Selector.from_dict(selector)
    if "id" not in rows.columns:
        raise ValueError("instruction_gpt4: the rows need an 'id' column")
    scores, imputed = selector.score_rows(rows)
    out = pd.DataFrame({"id": rows["id"].astype(str).to_numpy(), SCORE_COLUMN: scores})
    out.attrs["n_unscorable"] = int((~np.isfinite(scores)).sum())
    out.attrs["n_rows_imputed"] = int(imputed.sum())
    out.attrs["features"] = selector.featurizer.feature_names
    return out
