"""The Hugging Face Trainer with the KaLM loss, the task batch sampler and SDK-format checkpoints.

Only these hooks change (everything else - optimiser, scheduler, DDP/DeepSpeed through
accelerate, logging, checkpoint rotation, resume - is the stock Trainer):

- ``compute_loss``: embed queries and passages, then :func:`kalm_contrastive_loss`;
- ``training_step``: optionally GradCache, for big contrastive batches in little memory;
- ``get_train_dataloader``: the semi-homogeneous task batch sampler as ``batch_sampler``;
- ``_save`` / ``_load_from_checkpoint``: checkpoints are SDK model folders (loadable by
  ``kalm_rag.Encoder`` and sentence-transformers, averageable by the soup) plus trainer state.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from kalm_rag.errors import ConfigError
from kalm_trainer.collate import ExampleDataset
from kalm_trainer.data.sampler import SemiHomogeneousBatchSampler
from kalm_trainer.data.store import IndexedExamples
from kalm_trainer.losses import LossConfig, kalm_contrastive_loss
from kalm_trainer.model import EmbeddingModel
from kalm_trainer.progress_callback import StepProgressCallback

__all__ = ["KalmTrainer"]


class KalmTrainer(Trainer):  # type: ignore[misc]
    """``Trainer`` for an :class:`EmbeddingModel` on an :class:`ExampleDataset`.

    ``batch_size`` is the GLOBAL batch (all processes); ``task_ratio`` is the semi-homogeneous
    batching ratio (1 = every batch from one task, 0 = random; RECIPE.md, "Data pipeline").
    ``gradcache_chunk`` > 0 embeds in chunks of that many texts with GradCache.
    """

    def __init__(
        self,
        *args: Any,
        loss_config: LossConfig,
        batch_size: int,
        task_ratio: float = 1.0,
        gradcache_chunk: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.model, EmbeddingModel):
            raise ConfigError(f"KalmTrainer trains an EmbeddingModel, got {type(self.model).__name__}")
        from kalm_trainer.launchers import check_gradcache_launcher

        check_gradcache_launcher(gradcache_chunk, deepspeed=bool(self.is_deepspeed_enabled) or None)
        if not isinstance(self.train_dataset, ExampleDataset | IndexedExamples):
            raise ConfigError("KalmTrainer needs its train_dataset as an ExampleDataset or IndexedExamples")
        self.examples: ExampleDataset | IndexedExamples = self.train_dataset
        self.loss_config = loss_config
        self.global_batch_size = batch_size
        self.task_ratio = task_ratio
        self.gradcache_chunk = gradcache_chunk
        self._batch_sampler: SemiHomogeneousBatchSampler | None = None
        self.add_callback(_SamplerEpochCallback(self))
        self.add_callback(StepProgressCallback())  # step, loss, s/step and ETA in the log

    # -- data ---------------------------------------------------------------------------------
    def batch_sampler(self) -> SemiHomogeneousBatchSampler:
        if self._batch_sampler is None and isinstance(self.examples, IndexedExamples):
            from kalm_trainer.data.store_sampler import IndexedBatchSampler

            self._batch_sampler = IndexedBatchSampler(
                self.examples.index,
                batch_size=self.global_batch_size,
                ratio=self.task_ratio,
                seed=self.args.seed,
                num_replicas=self.args.world_size,
                rank=self.args.process_index,
            )
        if self._batch_sampler is None:
            assert isinstance(self.examples, ExampleDataset)
            self._batch_sampler = SemiHomogeneousBatchSampler.from_examples(
                self.examples.examples,
                batch_size=self.global_batch_size,
                ratio=self.task_ratio,
                seed=self.args.seed,
                num_replicas=self.args.world_size,
                rank=self.args.process_index,
            )
        return self._batch_sampler

    def batch_plan_stats(self) -> dict[str, int]:
        """Counts of the current epoch's batch plan (mixed batches and items, items dropped)."""
        sampler = self.batch_sampler()
        if type(sampler) is SemiHomogeneousBatchSampler:
            return sampler.plan_stats()
        return dict(getattr(sampler, "stats", {}))  # a subclass that keeps its own counts

    def get_train_dataloader(self) -> DataLoader[Any]:
        sampler = self.batch_sampler()
        if len(sampler) == 0:
            raise ConfigError(
                f"no full batch of {self.global_batch_size} examples can be formed from "
                f"{len(self.examples)} examples (batches hold one task each at task_ratio 1): "
                "lower batch_size or add data"
            )
        # Not passed through accelerator.prepare: the sampler already yields this rank's slice of
        # each global batch, and accelerate's shard wrapper would re-batch those slices (it
        # expects full batches of the sampler's batch_size). The Trainer moves inputs to the
        # device itself, and skipping batches on resume works on a plain DataLoader too.
        return DataLoader(
            self.examples,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    # -- loss ---------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        self._count_tokens(inputs)
        embeddings = model({"query": inputs["query"], "passage": inputs["passage"]})
        loss = self._loss_from_embeddings(embeddings["query"], embeddings["passage"], inputs)
        return (loss, embeddings) if return_outputs else loss

    def _loss_from_embeddings(
        self, queries: torch.Tensor, passages: torch.Tensor, inputs: dict[str, Any]
    ) -> torch.Tensor:
        batch = queries.shape[0]
        if passages.shape[0] % batch:
            raise ConfigError(f"{passages.shape[0]} passages do not form equal groups for {batch} queries")
        group = passages.view(batch, passages.shape[0] // batch, passages.shape[1])
        # always passed (also all -1, retrieval data): the loss all-gathers labels, a collective
        # every process must join, and another rank's slice may hold labelled examples
        return kalm_contrastive_loss(
            queries,
            group[:, 0],
            group[:, 1:] if group.shape[1] > 1 else None,
            labels=inputs.get("labels"),
            teacher_scores=inputs.get("teacher_scores"),
            config=self.loss_config,
            generator=self._mixing_generator(),
        )

    def _mixing_generator(self) -> torch.Generator | None:
        if self.loss_config.mix_k == 0:
            return None
        # seeded by step and rank: a resumed run draws the same mixing weights as an unbroken one
        seed = (self.args.seed * 1_000_003 + self.state.global_step) * 131 + self.args.process_index
        return torch.Generator().manual_seed(seed)

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        local = inputs["query"]["attention_mask"].sum() + inputs["passage"]["attention_mask"].sum()
        self.state.num_input_tokens_seen += int(self.accelerator.gather(local.reshape(1)).sum().item())

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        if self.gradcache_chunk <= 0:
            loss: torch.Tensor = super().training_step(model, inputs, num_items_in_batch)
            return loss / self._gather_scale()
        from kalm_trainer.gradcache import gradcache_backward

        model.train()
        inputs = self._prepare_inputs(inputs)
        self._count_tokens(inputs)
        steps = self.current_gradient_accumulation_steps

        def embed(chunk: Any) -> torch.Tensor:
            with self.compute_loss_context_manager():
                return model({"x": chunk})["x"]  # type: ignore[no-any-return]

        def loss_fn(embeddings: list[torch.Tensor]) -> torch.Tensor:
            return self._loss_from_embeddings(embeddings[0], embeddings[1], inputs)

        def backward(loss: torch.Tensor) -> None:
            self.accelerator.backward(loss / steps)

        loss = gradcache_backward(
            embed,
            [inputs["query"], inputs["passage"]],
            loss_fn,
            chunk_size=self.gradcache_chunk,
            backward=backward,
            no_sync=lambda: self.accelerator.no_sync(model),
        )
        return loss / steps / self._gather_scale()

    def _gather_scale(self) -> float:
        """The loss is multiplied by the world size when it scores the all-gathered batch (so
        DDP's gradient average is right); logs report the plain mean loss instead."""
        from kalm_trainer.losses import is_distributed, world_size

        gathered = self.loss_config.gather_across_processes and is_distributed()
        return float(world_size()) if gathered else 1.0

    # -- logging ------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        logs["tokens_seen"] = float(self.state.num_input_tokens_seen)
        super().log(logs, start_time)

    # -- checkpoints --------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        if not self.args.should_save:
            return
        folder = str(output_dir or self.args.output_dir)
        model = self.accelerator.unwrap_model(self.model)
        save_into_shared_folder(model, folder, state_dict=state_dict)
        torch.save(self.args, os.path.join(folder, "training_args.bin"))

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: torch.nn.Module | None = None
    ) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            # these engines restore their own sharded states; the stock path handles them
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        target.load_weights(resume_from_checkpoint)


def save_into_shared_folder(model: EmbeddingModel, folder: str, *, state_dict: dict[str, Any] | None) -> None:
    """Save the SDK model files into ``folder`` without replacing the folder: during a
    multi-process run the other ranks write their own files into the same checkpoint folder
    (``rng_state_<rank>.pth``) while the main process saves the model. The model is written
    to a temporary sibling (atomically) and its files are then renamed in one by one."""
    import shutil
    from pathlib import Path

    target = Path(folder)
    tmp = target.with_name(f".{target.name}.model-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, state_dict=state_dict)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(tmp.rglob("*"), key=lambda p: len(p.parts)):
        destination = target / path.relative_to(tmp)
        if path.is_dir():
            destination.mkdir(exist_ok=True)
        else:
            os.replace(path, destination)
    shutil.rmtree(tmp, ignore_errors=True)


class _SamplerEpochCallback(TrainerCallback):  # type: ignore[misc]
    """Give the batch sampler the epoch number at every epoch start, also when resuming.

    The stock loop only calls ``set_epoch`` on loaders and samplers that accelerate wrapped; ours
    is a plain DataLoader (see ``get_train_dataloader``), so without this every epoch would
    replay epoch 0's batch order, and a resumed run would not know which epoch it is in.
    """

    def __init__(self, trainer: KalmTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer._batch_sampler is not None:
            self.trainer._batch_sampler.set_epoch(math.floor(state.epoch + 1e-6))
