"""Every option is written once: a field of its stage's config dataclass (stages.options), from
which the typer command is derived and the job key is read."""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest
import typer.main

import paced_cli
import schemas
from stages import distill, options, rollout, teacher_logits, weight
from tests.conftest import ROOT

# Every command of the app (paced_cli.COMMANDS) with its stage's config and whether it runs torch,
# as paced_cli.build.command recorded them: a new command is covered without being listed here.
CALLBACKS = {name: getattr(importlib.import_module(module), attr) for name, (module, attr) in paced_cli.COMMANDS.items()}
CONFIGS = {name: cb.config_cls for name, cb in CALLBACKS.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_command_options_are_the_config_fields(name):
    """Each command's options are exactly its config's option fields: names, help, defaults,
    whether required; and every field of the config is an option. Stages that run torch also
    take --threads (paced_cli.build adds it: where a stage runs, not what it makes)."""
    cls = CONFIGS[name]
    group = typer.main.get_command(paced_cli.app)
    cmd = group.commands[name]
    params = {p.name: p for p in cmd.params if p.param_type_name in ("option", "argument") and p.name != "help"}
    threads = params.pop("threads", None)
    assert (threads is None) == (not CALLBACKS[name].uses_torch), name
    fields = {f.name: f for f in options.declared(cls)}
    assert set(params) == set(fields) == {f.name for f in dataclasses.fields(cls)}
    for k, f in fields.items():
        p = params[k]
        assert p.help == f.metadata["help"], k
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        assert p.required == required, k
        if not required and f.default_factory is dataclasses.MISSING:
            assert p.default == f.default, k
        assert (p.param_type_name == "argument") == f.metadata["argument"], k
        if f.metadata["flags"]:
            assert set(f.metadata["flags"]) <= set(p.opts + p.secondary_opts), k


def test_no_option_is_declared_in_the_cli_modules():
    """The CLI modules derive their commands; none declares an option of its own (the root
    command's --version and the --threads that build.py gives every stage that runs torch aside)."""
    for path in (ROOT / "paced_cli").glob("*.py"):
        text = path.read_text()
        declared = len(re.findall(r"typer\.Option\(", text))
        assert declared == {"__init__.py": 1, "build.py": 2}.get(path.name, 0), path.name


def test_the_key_is_the_identity_options():
    """A job's key holds the identity options only: inputs are in it by fingerprint, and runtime
    options (where and how the job runs) may change on resume."""
    c = weight.WeightConfig(scores="s.parquet", out="w.parquet", alpha=2.0, plot="w.png", overwrite=True)
    assert options.key_options(c) == {"alpha": 2.0, "beta": 1.0, "scheme": "beta", "normalize": "mean",
                                      "estimator": "plugin", "prior": "0.5,0.5"}
    assert options.names(distill.DistillConfig, options.INPUT) == ("student", "teacher_logits", "weights", "init")
    assert "micro_batch_size" in options.names(distill.DistillConfig, options.RUNTIME)
    assert "batch_size" in options.names(teacher_logits.TeacherLogitsConfig, options.RUNTIME)
    # Generation's batch size changes what is sampled: it is identity there.
    assert "batch_size" in options.names(rollout.RolloutConfig, options.IDENTITY)
    with pytest.raises(ValueError):
        options.option("help", role="sometimes")


def test_two_backends_may_share_an_engine_option(monkeypatch):
    """An engine option is refused only when no chosen backend uses it: a second backend that
    also takes --tensor-parallel-size (say SGLang) was refused it as "only the vllm backend's"."""
    import sys
    import types

    from stages import backends

    stub = types.ModuleType("stub_backend")
    stub.OPTIONS = ("tensor_parallel_size",)
    stub.option_problems = lambda config: []
    monkeypatch.setitem(sys.modules, "stub_backend", stub)
    monkeypatch.setitem(backends.REGISTRY, "stub", ("stub_backend", "a test's"))
    monkeypatch.setattr(backends, "NAMES", tuple(backends.REGISTRY))
    base = dict(problems="p.parquet", model="m", out="o", tensor_parallel_size=2, max_model_len=64)
    with pytest.raises(schemas.InputError) as e:
        rollout.RolloutConfig(**base, backend="stub")
    assert str(e.value) == "--max-model-len: only the vllm backend uses them; add --backend vllm or drop them"
    with pytest.raises(schemas.InputError) as e:
        rollout.RolloutConfig(**base, backend="hf")
    assert str(e.value).splitlines() == [
        "--tensor-parallel-size: only the vllm or stub backend uses them; add --backend vllm or drop them",
        "--max-model-len: only the vllm backend uses them; add --backend vllm or drop them",
    ]
