"""A distill run under `accelerate launch` (DDP, FSDP, DeepSpeed): which problems each process
trains on, which process writes, and the collectives in between. Without a launcher none of
this is imported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import schemas
from schemas import InputError
from stages.common import notice
from stages.training import checkpoints


def launched() -> bool:
    """True in a process started by `accelerate launch` / torchrun with more than one process,
    or by `accelerate launch` with an FSDP or DeepSpeed config (even on one process)."""
    env = os.environ
    return (
        int(env.get("WORLD_SIZE", "1") or 1) > 1
        or env.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1")
        or env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("true", "1")
    )


class Launch:
    """This process's part in a run under `accelerate launch`: Hugging Face accelerate owns the
    process group, the DDP / FSDP / DeepSpeed wrapping, gradient synchronisation, gathering of
    sharded state and checkpoints of sharded state. paced only decides which problems each
    process trains on and which process writes (the main one)."""

    def __init__(self, config) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        # CPU processes (--device cpu, or a machine without an accelerator) join one gloo group
        # even when started by torchrun / `accelerate launch --multi_gpu` rather than mpirun.
        cpu = config.device == "cpu" or not torch.accelerator.is_available()
        self.acc = Accelerator(cpu=cpu)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        if self.world != int(os.environ.get("WORLD_SIZE", "1") or 1):
            raise RuntimeError(
                f"accelerate set up {self.world} process(es) but the launcher started "
                f"{os.environ.get('WORLD_SIZE')}: each would train its own copy; check the accelerate config"
            )
        self.main = self.acc.is_main_process
        kind = self.acc.distributed_type
        self.kind = "deepspeed" if kind == DistributedType.DEEPSPEED else "fsdp" if kind == DistributedType.FSDP else "ddp"
        self.sharded = self.kind != "ddp"
        self.device = str(self.acc.device)
        self.describe = {"processes": self.world, "distributed_type": str(getattr(kind, "value", kind))}
        self.model = None

    def check(self, config) -> None:
        from accelerate.utils import DistributedType

        kind = self.acc.distributed_type
        problems = []
        if kind in (DistributedType.XLA, DistributedType.MEGATRON_LM):
            problems.append(f"accelerate launch: {kind} is not supported by paced distill; use DDP, FSDP or DeepSpeed")
        if config.device != "auto" and config.device.split(":")[0] != self.acc.device.type:
            problems.append(
                f"--device {config.device}: under accelerate launch each process uses the launcher's device "
                f"({self.device} here); drop --device, or pass --device cpu to run every process on CPU"
            )
        if config.lora_r and self.sharded:
            problems.append(f"--lora-r: LoRA is supported under DDP, not under {self.kind.upper()}; use the DDP config")
        if problems:
            raise InputError("\n".join(problems))
        env = os.environ
        wanted = "fsdp" if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" else (
            "deepspeed" if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else None)
        if wanted and wanted != self.kind:
            notice("warning",
                   f"the accelerate config asks for {wanted.upper()}, which accelerate runs on GPUs "
                   f"only; these {self.device} processes run {self.kind.upper()} (each holds the whole model)")

    def on_main(self, fn):
        """fn() on the main process only; its result, or its failure, reaches every process."""
        from accelerate.utils import broadcast_object_list

        box: list[Any] = [None]
        error: BaseException | None = None
        if self.main:
            try:
                box[0] = ("ok", fn())
            except InputError as e:
                box[0], error = ("input", str(e)), e
            except BaseException as e:
                box[0], error = ("fail", f"{type(e).__name__}: {e}"), e
        broadcast_object_list(box, from_process=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "input":
            raise InputError(value)
        if kind == "fail":
            raise RuntimeError(f"the main process failed: {value}")
        return value

    def prepare(self, module, optimizer, config):
        if self.kind == "deepspeed":  # batch size and clipping come from paced's options
            plugin = self.acc.state.deepspeed_plugin
            if plugin.is_auto("train_micro_batch_size_per_gpu"):
                plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.micro_batch_size
            plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm
        self.model, prepared = self.acc.prepare(module, optimizer)
        return prepared

    def forward_backward(self, batch, coef, last: bool) -> dict:
        """One micro-batch. Gradients are averaged over processes by DDP/FSDP/DeepSpeed, so the
        loss is scaled by the process count: the synchronised gradient is then the SUM over
        processes, i.e. the single-process gradient of sum_i w_i L_i / N over the global batch."""
        import contextlib

        ctx = contextlib.nullcontext()
        if self.kind == "deepspeed":
            self.acc.sync_gradients = last  # DeepSpeed reduces and steps at the boundary only
        elif self.kind == "ddp" and not last:
            ctx = self.acc.no_sync(self.model)  # one all-reduce per step, after the last micro-batch
        with ctx:
            terms = self.model(batch, coef)
            self.acc.backward(terms["loss"] * self.world)
        return terms

    def reduce_sums(self, sums: dict[str, float]) -> dict[str, float]:
        import torch

        keys = list(sums)
        t = self.acc.reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.acc.device), "sum")
        return {k: float(v) for k, v in zip(keys, t.tolist())}

    def clip(self, max_norm: float) -> float:
        norm = self.acc.clip_grad_norm_(self.model.parameters(), max_norm)
        if norm is None and self.kind == "deepspeed":  # DeepSpeed clipped inside its step
            norm = self.acc.deepspeed_engine_wrapped.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    def inner(self):
        """The student itself (unwrapped from DDP/FSDP/DeepSpeed and from the loss module)."""
        return self.acc.unwrap_model(self.model).model

    def rng_ranks(self) -> list[dict]:
        from accelerate.utils import gather_object

        return gather_object([checkpoints.rng_state()])

    def save_checkpoint(self, out: Path, step: int, optimizer, scheduler, log: list[dict]) -> None:
        rngs = self.rng_ranks()  # a collective: every process
        if not self.sharded:  # DDP: every process holds the same model and optimizer state
            if self.main:
                checkpoints.save_checkpoint(out, step, self.inner(), optimizer, scheduler, log, rng_ranks=rngs)
            return
        import torch

        tmp = schemas.outputs.temp_path(out / checkpoints.CHECKPOINTS / f"step-{step}", writer="launch")
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp / "accelerate"))  # sharded model + optimizer, accelerate's format
        self.acc.wait_for_everyone()
        if self.main:
            torch.save({"scheduler": scheduler.state_dict()}, tmp / "scheduler.pt")
            checkpoints.finish_checkpoint(out, tmp, step, log, rngs, keep=2, fmt=f"accelerate-{self.kind}")
        self.acc.wait_for_everyone()

    def load_checkpoint(self, path: Path, optimizer, scheduler) -> tuple[int, list[dict]]:
        import torch

        if (path / "accelerate").exists():
            if not self.sharded:
                raise InputError(f"--resume: checkpoint {path} was written under FSDP or DeepSpeed; resume it under the same launch configuration")
            self.acc.load_state(str(path / "accelerate"))
            scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True)["scheduler"])
            return checkpoints.load_rng_and_log(path, self.rank, self.world)
        if self.sharded:
            raise InputError(f"--resume: checkpoint {path} was written without FSDP/DeepSpeed; resume it with DDP or one process")
        return checkpoints.load_checkpoint(path, self.inner(), optimizer, scheduler, self.rank, self.world)

    def save_final(self, out: Path, lora: bool) -> None:
        """The final model, unwrapped, written once by the main process (safetensors)."""
        if not self.sharded:
            if self.main:
                model = self.inner()
                if lora:
                    model = model.merge_and_unload()
                model.eval()
                model.save_pretrained(out, safe_serialization=True)
            return
        state = self.acc.get_state_dict(self.model)  # gathers FSDP shards / ZeRO-3 partitions: every process
        if self.main:
            state = {k.removeprefix("model."): v for k, v in state.items()}
            self.inner().save_pretrained(out, state_dict=state, safe_serialization=True)

    def end(self) -> None:
        self.acc.wait_for_everyone()
        self.acc.end_training()
