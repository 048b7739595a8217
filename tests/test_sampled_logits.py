"""Teacher logits as drawn tokens (`paced teacher-logits --logits sampled|hybrid`).

The estimator (stages/teacher_logits.py, stages/training/data.py): S draws from the teacher's
distribution (or from its mass outside the top-k), kept as distinct ids with mass c_v / S of
what they stand for. The forward-KL gradient on those buckets must have the full-vocabulary
gradient as its expectation, and the value (with the entropy shift) the full KL. Tested
through the code that writes the artifact (`sparse.topk_from_hidden`) and the code that feeds the
losses (`data.collate`, `forward`'s shift), over many seeds, against the dense reference.
"""

from __future__ import annotations

import math
import shutil

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import schemas
from stages.backends import sparse
from stages.training import data as train_data
from stages.training import losses
from tests.conftest import job_record, manifest_record, paced

V, N_POS, H = 48, 3, 16


def teacher_and_student(seed: int = 0, scale: float = 2.5):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(H, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=g) * scale / math.sqrt(H))
    hidden = torch.randn(N_POS, H, generator=g)
    student = torch.randn(N_POS, V, generator=g)
    return head, hidden, student


def columns(head, hidden, *, top_k: int, draws: int, seed: int, temperature: float = 1.0, scheme: str = "systematic") -> dict:
    gen = None
    if draws:
        gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return sparse.topk_from_hidden(head, hidden, torch.zeros(N_POS, dtype=torch.long), top_k=top_k, real_vocab=V,
                                   chunk_size=2, samples=draws, temperature=temperature, scheme=scheme, generator=gen)


def as_data(cols_list: list[dict]) -> train_data.TrainData:
    """Rows in the artifact's own types, as distill's cache holds them."""
    rows = {c.name: [] for c in schemas.TEACHER_LOGITS.columns}
    for i, cols in enumerate(cols_list):
        rows["problem_id"].append(f"p{i}")
        rows["sample_index"].append(0)
        rows["prompt_token_ids"].append([1])
        rows["token_ids"].append([0] * N_POS)
        for key in ("topk_ids", "topk_logprobs", "tail_logprob", "target_logprobs", "sample_ids", "sample_logmass", "entropy"):
            rows[key].append(cols[key])
    table = schemas.table_from_columns(rows, schemas.TEACHER_LOGITS)
    n = table.num_rows
    return train_data.TrainData(table, [f"p{i}" for i in range(n)], {f"p{i}": 1.0 for i in range(n)},
                                {f"p{i}": [i] for i in range(n)}, {f"p{i}": N_POS for i in range(n)})


def bucket_terms(cols_list: list[dict], student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the gradient of sum_t fkl_t w.r.t. the student's logits [rows, N_POS, V], and the
    value sum_t (fkl_t + shift_t) [rows], as distill computes them."""
    batch = train_data.collate(as_data(cols_list), list(range(len(cols_list))), "cpu")
    logits = student.expand(len(cols_list), -1, -1).clone().requires_grad_(True)
    terms = losses.token_losses(logits, batch["topk_ids"], batch["topk_lp"], batch["tail"], batch["mask"], loss="fkl")
    terms["fkl"].sum().backward()
    value = (terms["fkl"] + batch["fkl_shift"]).sum(-1).detach()
    return logits.grad, value


def dense(head, hidden, student) -> tuple[torch.Tensor, float]:
    p = torch.softmax(head(hidden).float(), -1)
    q = torch.log_softmax(student, -1)
    grad = torch.softmax(student, -1) - p
    kl = float((p * (p.log() - q)).sum().detach())
    return grad.detach(), kl


@pytest.mark.parametrize("scheme", sparse.SCHEMES)
@pytest.mark.parametrize("top_k, draws", [(0, 8), (4, 6)], ids=["sampled", "hybrid"])
def test_the_drawn_gradient_and_value_are_unbiased_with_the_variance_of_their_scheme(top_k, draws, scheme):
    head, hidden, student = teacher_and_student()
    want_grad, want_kl = dense(head, hidden, student)
    seeds = 1500
    grads, values = bucket_terms([columns(head, hidden, top_k=top_k, draws=draws, seed=s, scheme=scheme)
                                  for s in range(seeds)], student)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(seeds)
    # The variance the estimator has in theory (a token rarely drawn may never be, and its sample
    # std is then 0). The mass P c / S of a token of the rest (mass P), with x = S p / P:
    # multinomial, c ~ Bin(S, p / P): variance p (P - p) / S; systematic, c = floor(x) or
    # ceil(x): P^2 f (1 - f) / S^2, f = x - floor(x). A top-k token's is 0.
    p = torch.softmax(head(hidden).float(), -1).detach().double()
    top = torch.zeros_like(p, dtype=torch.bool)
    if top_k:
        top.scatter_(-1, p.topk(top_k, -1).indices, True)
    rest = torch.where(top, 0.0, p).sum(-1, keepdim=True)
    if scheme == "multinomial":
        var = p * (rest - p) / draws
    else:
        x = draws * p / rest
        f = x - x.floor()
        var = rest**2 * f * (1 - f) / draws**2
    var = torch.where(top, 0.0, var)
    se_theory = (var / seeds).sqrt().float()
    # float16 storage of the top-k log-probs: a relative error of at most 2^-11 in each stored mass
    rounding = 1e-3 * p.float() + 1e-7
    bound = 5 * torch.maximum(se, se_theory) + rounding
    assert ((mean - want_grad).abs() <= bound).all(), float(((mean - want_grad).abs() / bound).max())
    # the draws vary, and as much as the scheme's variance says (summed over the vocabulary)
    seen = float(grads.double().var(0).sum())
    assert var.sum() > 1e-4 and seen == pytest.approx(float(var.sum()), rel=0.1)
    v_se = float(values.std()) / math.sqrt(seeds)
    assert abs(float(values.mean()) - want_kl) <= 5 * v_se + 1e-3 * want_kl


def test_systematic_counts_are_the_floor_or_ceiling_of_the_expected_count():
    """Each token's count is floor(S q) or ceil(S q) of its proposal mass q, whatever the seed;
    a token of zero mass is never drawn, even where it sits between two drawn ones."""
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(5, V, generator=g) * 3
        logits[:, ::3] = float("-inf")  # every third id has no mass
        q = torch.softmax(logits.double(), -1)
        for S in (1, 7, 40, 1000):
            ids = sparse.draw(torch.log_softmax(logits, -1), S, "systematic", torch.Generator().manual_seed(seed))
            counts = torch.zeros(5, V, dtype=torch.float64).scatter_add_(-1, ids, torch.ones_like(ids, dtype=torch.float64))
            assert counts.sum(-1).eq(S).all()
            assert (counts >= (S * q - 1e-6).floor()).all() and (counts <= (S * q + 1e-6).ceil()).all()
            assert counts[:, ::3].eq(0).all()


def test_many_draws_and_k_equal_v_match_the_dense_loss():
    head, hidden, student = teacher_and_student(seed=3)
    want_grad, want_kl = dense(head, hidden, student)
    many, many_kl = bucket_terms([columns(head, hidden, top_k=0, draws=200_000, seed=1)], student)
    assert torch.allclose(many[0], want_grad, atol=4e-3) and many_kl.item() == pytest.approx(want_kl, abs=5e-3)
    full, full_kl = bucket_terms([columns(head, hidden, top_k=V, draws=0, seed=0)], student)
    assert torch.allclose(full[0], want_grad, atol=2e-3) and full_kl.item() == pytest.approx(want_kl, rel=2e-3)


@pytest.mark.parametrize("scheme", sparse.SCHEMES)
def test_draws_are_stored_as_distinct_ids_with_their_mass(scheme):
    head, hidden, _ = teacher_and_student(seed=5)
    cols = columns(head, hidden, top_k=4, draws=10, seed=7, scheme=scheme)
    for pos in range(N_POS):
        ids = cols["sample_ids"][pos]
        assert len(ids) == len(set(ids)) and not set(ids) & set(cols["topk_ids"][pos])
        mass = torch.tensor(cols["sample_logmass"][pos]).double().exp()
        assert float(mass.sum()) == pytest.approx(math.exp(cols["tail_logprob"][pos]), rel=1e-5)
        # masses are tail * count / draws: multiples of tail / 10, most drawn first
        counts = (mass / mass.sum() * 10).round()
        assert torch.allclose(mass / mass.sum() * 10, counts, atol=1e-4) and counts.sum() == 10
        assert (counts[:-1] >= counts[1:]).all()
    p = torch.softmax(head(hidden).float(), -1)
    h = -(p * p.log()).sum(-1)
    assert cols["entropy"] == pytest.approx(h.tolist(), rel=1e-5)
    # the same seed draws the same tokens; another seed others
    assert columns(head, hidden, top_k=4, draws=10, seed=7, scheme=scheme)["sample_ids"] == cols["sample_ids"]
    assert columns(head, hidden, top_k=4, draws=10, seed=8, scheme=scheme)["sample_ids"] != cols["sample_ids"]


def test_a_proposal_temperature_reaches_further_into_the_tail():
    """At t > 1 the draws cover more distinct tokens; the masses stay normalised to the rest."""
    head, hidden, _ = teacher_and_student(seed=2, scale=5.0)
    plain = [len(x) for s in range(40) for x in columns(head, hidden, top_k=2, draws=12, seed=s)["sample_ids"]]
    hot = [columns(head, hidden, top_k=2, draws=12, seed=s, temperature=3.0) for s in range(40)]
    assert sum(len(x) for c in hot for x in c["sample_ids"]) > sum(plain)
    for c in hot:
        for pos in range(N_POS):
            total = sum(math.exp(m) for m in c["sample_logmass"][pos])
            assert total == pytest.approx(math.exp(c["tail_logprob"][pos]), rel=1e-5)


# ---------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def drawn(chain, teacher_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("drawn")
    for name, extra in (("sampled", ["--logits", "sampled", "--draws", "6", "--part-size", "4"]),
                        ("hybrid", ["--logits", "hybrid", "--top-k", "4", "--draws", "6", "--part-size", "4"])):
        r = paced("teacher-logits", "--problems", chain / "problems.parquet", "--sequences", chain / "teacher_rollouts",
                  "--teacher", teacher_dir, "--out", d / name, *extra)
        assert r.exit_code == 0, r.stderr
        assert "representation" in r.stderr and name in r.stderr
        assert "teacher entropy, nats per token" in r.stderr
        assert ("teacher mass outside the top-k" in r.stderr) == (name == "hybrid")  # a sampled one has no top-k
    return d


def test_sampled_and_hybrid_end_to_end_and_the_losses_they_cannot_give(chain, drawn, student_dir, tmp_path):
    s = pl.read_parquet(drawn / "sampled")
    assert s["topk_ids"].list.eval(pl.element().list.len()).list.max().max() == 0
    assert s["sample_ids"].list.eval(pl.element().list.len()).list.max().max() <= 6
    assert job_record(drawn / "sampled")["options"]["logits"] == "sampled"
    h = pl.read_parquet(drawn / "hybrid")
    assert h["topk_ids"].list.eval(pl.element().list.len()).list.min().min() == 4
    for name in ("sampled", "hybrid"):
        r = paced("distill", "--student", student_dir, "--teacher-logits", drawn / name, "--weights", chain / "weights.parquet",
                  "--out", tmp_path / name, "--max-steps", "2", "--batch-size", "2")
        assert r.exit_code == 0, r.stderr
        assert f"fkl, teacher {name}" in r.stderr and "not estimated" in r.stderr
        log = pl.read_parquet(tmp_path / name / "train_log.parquet")
        assert log["fkl"].is_finite().all() and log["rkl"].is_nan().all()
        for loss in ("rkl", "akl"):
            r = paced("distill", "--student", student_dir, "--teacher-logits", drawn / name, "--weights",
                      chain / "weights.parquet", "--out", tmp_path / f"{name}-{loss}", "--max-steps", "1", "--loss", loss)
            assert r.exit_code == 2 and f"--loss {loss}" in r.stderr and f"a {name} representation" in r.stderr
            assert not (tmp_path / f"{name}-{loss}").exists()


def test_snr_measures_the_drawn_forward_kl_and_refuses_the_rest(chain, student_dir, teacher_dir, tmp_path):
    """snr on the student's K = 2 rollouts per problem, their teacher logits drawn."""
    r = paced("teacher-logits", "--problems", chain / "problems.parquet", "--sequences", chain / "rollouts",
              "--teacher", teacher_dir, "--out", tmp_path / "tl", "--logits", "hybrid", "--top-k", "2", "--draws", "4")
    assert r.exit_code == 0, r.stderr
    base = ["snr", "--student", student_dir, "--teacher-logits", tmp_path / "tl", "--weights", chain / "weights.parquet"]
    r = paced(*base, "--out", tmp_path / "snr.parquet")
    assert r.exit_code == 0, r.stderr
    assert pl.read_parquet(tmp_path / "snr.parquet").height > 0
    r = paced(*base, "--out", tmp_path / "snr-akl.parquet", "--loss", "akl")
    assert r.exit_code == 2 and "a hybrid representation" in r.stderr and not (tmp_path / "snr-akl.parquet").exists()


def test_a_resumed_sampled_job_writes_the_same_artifact(chain, drawn, teacher_dir, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(drawn / "sampled", out)
    (out / "_manifest.parquet").unlink()
    (out / "part-00001.parquet").unlink()
    r = paced("teacher-logits", "--problems", chain / "problems.parquet", "--sequences", chain / "teacher_rollouts",
              "--teacher", teacher_dir, "--out", out, "--logits", "sampled", "--draws", "6", "--part-size", "4")
    assert r.exit_code == 0, r.stderr
    key = ["problem_id", "sample_index"]
    assert pl.read_parquet(out).sort(key).equals(pl.read_parquet(drawn / "sampled").sort(key))
    assert manifest_record(out)["rows"] == manifest_record(drawn / "sampled")["rows"]


def test_a_job_drawn_before_the_draw_scheme_option_resumes_only_as_multinomial(chain, teacher_dir, tmp_path):
    """Jobs made before --draw-scheme drew independently and their key has no scheme: a
    multinomial job keeps that key, so they resume; a systematic one would refuse to finish them."""
    out = tmp_path / "old"
    base = ["teacher-logits", "--problems", chain / "problems.parquet", "--sequences", chain / "teacher_rollouts",
            "--teacher", teacher_dir, "--out", out, "--logits", "sampled", "--draws", "6", "--part-size", "4"]
    r = paced(*base, "--draw-scheme", "multinomial")
    assert r.exit_code == 0 and "multinomial" in r.stderr, r.stderr
    assert "draw_scheme" not in job_record(out)["options"]
    r = paced(*base)
    assert r.exit_code == 2 and "--overwrite" in r.stderr, r.stderr
    r = paced(*base, "--draw-scheme", "multinomial")
    assert r.exit_code == 0 and "already complete" in r.stdout + r.stderr, r.stderr


def test_options_that_do_not_go_together_are_refused(chain, teacher_dir, tmp_path):
    base = ["teacher-logits", "--problems", chain / "problems.parquet", "--sequences", chain / "teacher_rollouts",
            "--teacher", teacher_dir, "--out", tmp_path / "x"]
    for extra, needle in (
        (["--draws", "8"], "--draws: only with --logits sampled or hybrid"),
        (["--logits", "sampled", "--backend", "vllm"], "not with --backend vllm"),
        (["--logits", "hybrid", "--draws", "0"], "--draws 0: must be at least 1"),
        (["--logits", "sampled", "--draws", "1000000000"], "--draws 1000000000: at most 33,554,432"),
        (["--logits", "sampled", "--top-k", "8"], "--top-k 8: not with --logits sampled"),
        (["--logits", "sampled", "--draws", "100000"], "lower --chunk-size to 335 or below"),
        (["--logits", "sampled", "--sample-temperature", "0"], "--sample-temperature 0.0: must be a finite number > 0"),
        (["--logits", "nucleus"], "--logits nucleus: use one of topk, sampled, hybrid"),
        (["--draw-scheme", "multinomial"], "--draw-scheme: only with --logits sampled or hybrid"),
        (["--logits", "sampled", "--draw-scheme", "stratified"], "--draw-scheme stratified: use one of systematic, multinomial"),
    ):
        r = paced(*base, *extra)
        assert r.exit_code == 2 and needle in r.stderr, (extra, r.stderr)
    assert not (tmp_path / "x").exists()


def test_a_version_1_artifact_still_trains(chain, student_dir, tmp_path):
    """teacher_logits written before version 2 (no draws, no entropy): read as top-k."""
    old = tmp_path / "v1"
    old.mkdir()
    keep = [c.name for c in schemas.teacher_logits.V1.columns]
    for f in sorted((chain / "tl").glob("part-*.parquet")):
        t = pq.read_table(f).select(keep)
        meta = dict(t.schema.metadata) | {b"paced.schema_version": b"1"}
        pq.write_table(t.replace_schema_metadata(meta), old / f.name)
    header = schemas.read_header(old, schemas.TEACHER_LOGITS, option="--teacher-logits")
    assert header.schema_name == "teacher_logits"
    r = paced("distill", "--student", student_dir, "--teacher-logits", old, "--weights", chain / "weights.parquet",
              "--out", tmp_path / "d", "--max-steps", "1", "--batch-size", "2")
    assert r.exit_code == 0, r.stderr
    assert "fkl, teacher topk" in r.stderr
    bad = tmp_path / "v9"
    bad.mkdir()
    t = pq.read_table(next((chain / "tl").glob("part-*.parquet")))
    pq.write_table(t.replace_schema_metadata(dict(t.schema.metadata) | {b"paced.schema_version": b"9"}), bad / "p.parquet")
    r = paced("distill", "--student", student_dir, "--teacher-logits", bad, "--weights", chain / "weights.parquet",
              "--out", tmp_path / "d9", "--max-steps", "1")
    assert r.exit_code == 2 and "schema version 9" in r.stderr and "reads version 1 or 2" in r.stderr


def test_the_pa_types_of_the_new_columns():
    arrow = schemas.TEACHER_LOGITS.arrow
    assert arrow.field("sample_ids").type == pa.list_(pa.list_(pa.int32()))
    assert arrow.field("entropy").nullable and schemas.TEACHER_LOGITS.version == 2
