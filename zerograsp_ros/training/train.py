"""Resumable training of ZeroGraspNet on generated shards.

    python -m zerograsp_ros.training.train --data datasets/v1 --preset cpu \
        --out runs/cpu_v1 --minutes 55 [--resume]

Writes into --out: train.log (one line per logged step + validations),
metrics.jsonl (machine-readable), last.pt (model checkpoint, the format of
`model.checkpoint`), train_state.pt (optimizer, step, RNG, elapsed time; for
--resume) and best.pt (the checkpoint with the best validation score: by default the
grasp AP after the full refinement on the first --val-grasp-scenes validation scenes,
`--select-by f1` for the reconstruction F-1 at 1 cm).
The same command runs on a GPU (--device cuda or auto) without changes, and
under torchrun on several processes or machines:

    torchrun --nproc_per_node 2 -m zerograsp_ros.training.train --data datasets/v1 ...

Each rank trains on its own shard of the scenes (scene i goes to rank
i % world_size), gradients are averaged over the ranks with one all-reduce per
step (gloo on CPU, nccl on CUDA; done by hand rather than with
DistributedDataParallel because a rank whose batch has no usable object must
still join the collective with zero gradients), BatchNorm running statistics
are averaged too, so every rank holds the same weights. Rank 0 alone logs,
validates and writes checkpoints; the batch per rank is --batch.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
from pathlib import Path
import platform
import random
import sys
import time

import numpy as np
import torch

from zerograsp_ros.data.dataset import SceneRecord, ShardDataset
from zerograsp_ros.errors import InputError
from zerograsp_ros.model.checkpoint import load_checkpoint, save_checkpoint
from zerograsp_ros.model.config import preset
from zerograsp_ros.model.network import ZeroGraspNet, training_step
from zerograsp_ros.runtime import resolve_device

SHARED_HEAD_CHANNELS = 6   # normal 3, SDF 1, graspness 1, quality 1: same in every grasp head


class Logger:
    def __init__(self, out: Path):
        self.text = open(out / 'train.log', 'a', buffering=1)
        self.jsonl = open(out / 'metrics.jsonl', 'a', buffering=1)

    def line(self, msg: str) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S')
        self.text.write(f'[{stamp}] {msg}\n')

    def metrics(self, kind: str, step: int, values: dict) -> None:
        self.jsonl.write(json.dumps({'kind': kind, 'step': step, 'time': time.time(), **values})
                         + '\n')


def load_records(directory: Path, limit: int | None = None) -> list[SceneRecord]:
    """Scene records that have at least one labelled object (kept compact in memory)."""
    pool = RecordPool(directory, limit)
    return pool.records


class RecordPool:
    """Training scenes in memory; `refresh` adds shards written since (train while generating)."""

    def __init__(self, directory: Path, limit: int | None = None, rank: int = 0,
                 world_size: int = 1):
        self.directory, self.limit = Path(directory), limit
        self.rank, self.world_size = rank, world_size   # scene i belongs to rank i % world
        self.records: list[SceneRecord] = []
        self._loaded: set[str] = set()
        self.refresh()

    def refresh(self) -> int:
        """Load complete shards not seen yet; returns how many scenes were added."""
        before = len(self.records)
        ds = ShardDataset(self.directory)
        for i in range(len(ds)):
            if self.limit is not None and len(self.records) >= self.limit:
                break
            si, _ = ds._index[i]
            name = ds.shards[si].name
            if name in self._loaded:
                continue
            if i % self.world_size != self.rank:
                if i + 1 == len(ds) or ds._index[i + 1][0] != si:
                    self._loaded.add(name)
                continue
            rec = ds.record(i)
            if rec.labelled_ids():
                self.records.append(rec)
            if i + 1 == len(ds) or ds._index[i + 1][0] != si:
                self._loaded.add(name)
        return len(self.records) - before


class Distributed:
    """torchrun's process group (or a single process when torchrun did not start us)."""

    def __init__(self, device_arg: str):
        import torch.distributed as dist

        self.dist = dist
        self.world_size = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.enabled = self.world_size > 1
        device = resolve_device(device_arg)
        if self.enabled:
            local = int(os.environ.get('LOCAL_RANK', '0'))
            if device.type == 'cuda':
                device = torch.device('cuda', local)
                torch.cuda.set_device(device)
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
        self.device = device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_model(self, model) -> None:
        """Rank 0's weights and buffers everywhere (same start on every rank)."""
        if self.enabled:
            for t in list(model.parameters()) + list(model.buffers()):
                self.dist.broadcast(t.data, 0)

    def sync_step(self, model, ok: bool, stop: bool) -> tuple[int, bool]:
        """One all-reduce per step; returns (ranks with a usable batch, stop anywhere).

        Gradients are averaged over the ranks whose batch was usable, BatchNorm
        running statistics over all ranks.
        """
        params = list(model.parameters())
        if not self.enabled:
            return int(ok), stop
        buffers = [b for b in model.buffers() if b.is_floating_point()]
        grads = [p.grad if (ok and p.grad is not None) else torch.zeros_like(p)
                 for p in params]
        flags = torch.tensor([float(ok), float(stop)], device=self.device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [b.reshape(-1) for b in buffers]
                         + [flags])
        self.dist.all_reduce(flat)
        usable, stop_any = int(round(float(flat[-2]))), bool(flat[-1] > 0)
        offset = 0
        for p in params:
            n = p.numel()
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(flat[offset:offset + n].view_as(p) / max(usable, 1))
            offset += n
        for b in buffers:
            n = b.numel()
            b.copy_(flat[offset:offset + n].view_as(b) / self.world_size)
            offset += n
        return usable, stop_any

    def close(self) -> None:
        if self.enabled:
            self.dist.barrier()
            self.dist.destroy_process_group()


class _Silent:
    """Logger stand-in for ranks > 0 (rank 0 writes the run's logs)."""

    def line(self, msg: str) -> None:
        if 'skipped' in msg or 'non-finite' in msg:
            print(msg, file=sys.stderr)

    def metrics(self, *args, **kwargs) -> None:
        pass


def init_from_checkpoint(model: ZeroGraspNet, path: str) -> str:
    """Copy every weight of a checkpoint whose name and shape match (all but a new head).

    Returns a line saying what was copied and what was left as initialised.
    """
    import torch as _torch

    state = _torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    own = model.state_dict()
    copied = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    partial = []
    for k, v in state.items():   # both heads start with normal 3, SDF 1, graspness, quality
        if (k.startswith('signal_head.') and k in own and k not in copied
                and own[k].shape[1:] == v.shape[1:]):
            rows = min(SHARED_HEAD_CHANNELS, len(v), len(own[k]))
            own[k][:rows] = v[:rows]
            partial.append(k)
    fresh = sorted(k for k in own if k not in copied and k not in partial)
    own.update(copied)
    model.load_state_dict(own)
    return (f'initialised {len(copied)} of {len(own)} tensors from {path}, the first '
            f'{SHARED_HEAD_CHANNELS} output rows of {partial}; fresh: '
            f'{fresh if len(fresh) <= 8 else fresh[:8] + ["..."]}')


def freeze_backbone(model: ZeroGraspNet) -> str:
    """Train only the finest-depth head (normal, SDF, grasp fields).

    The rest keeps its weights and BatchNorm statistics (momentum 0), so the
    predicted occupancy cannot change.
    """
    trainable = 0
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith('signal_head.'))
        trainable += p.numel() if p.requires_grad else 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and \
                not name.startswith('signal_head'):
            m.momentum = 0.0
    return f'backbone frozen: {trainable} trainable parameters (signal_head)'


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def learning_rate(step: int, base: float, warmup: int, halve_every: int) -> float:
    """Linear warm-up, then halved every `halve_every` steps (paper schedule)."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 ** ((step - warmup) // max(halve_every, 1))


def validate(model: ZeroGraspNet, records: list[SceneRecord], device, max_objects: int,
             grasp_scenes: int = 0) -> dict:
    """Reconstruction metrics of the predictor on validation scenes (eval mode).

    With grasp_scenes > 0, also `val_grasp_ap`: on the first grasp_scenes scenes, the
    label judge's AP (mu 0.2-1.2, k 1-10, as `training.evaluate`) of the grasps that
    survive the full refinement, a scene without survivors counting 0 (a head that
    leaves scenes empty must not look better for it), predicted on the depth-tared
    frame the pipeline sees (`evaluate.observed_frame`). Reconstruction is measured on
    the raw frame against the sensor-scaled truth, the frame the training targets use.
    """
    from zerograsp_ros.model.inference import ZeroGraspPredictor
    from zerograsp_ros.training.evaluate import (
        observed_frame,
        reconstruction_metrics,
        refined_grasp_ap,
    )

    predictor = ZeroGraspPredictor(model, model.config, device)
    rows, grasp_ap = [], []
    for si, rec in enumerate(records):
        pred = predictor.predict(rec.frame(), object_ids=rec.labelled_ids(), with_mesh=False)
        if si < grasp_scenes:
            frame, scale = observed_frame(rec)
            tared = pred if scale is None else predictor.predict(
                frame, object_ids=rec.labelled_ids(), with_mesh=False)
            grasp_ap.append(refined_grasp_ap(tared, rec, frame=frame))
        by_id = {o.object_id: o for o in pred.objects}
        for oid in rec.labelled_ids():
            gt = rec.target(oid, with_grasps=False, sensor_frame=True)
            o = by_id.get(oid)
            if o is None or len(o.points) == 0:
                continue
            rows.append(reconstruction_metrics(o.points, o.normals, gt.surface_points,
                                               gt.surface_normals))
            if len(rows) >= max_objects:
                break
    model.train()
    out = {'val_objects': len(rows)}
    if grasp_ap:
        out.update(val_grasp_ap=float(np.mean(grasp_ap)), val_grasp_scenes=len(grasp_ap))
    if rows:
        out.update(val_cd_mm=float(np.mean([r['cd_mm'] for r in rows])),
                   val_f1=float(np.mean([r['f1'] for r in rows])),
                   val_nc=float(np.mean([r['nc'] for r in rows])))
    return out


def train(args) -> dict:
    from tqdm import tqdm

    out = Path(args.out)
    ddp = Distributed(args.device)
    device = ddp.device
    if ddp.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = Logger(out) if ddp.is_main else _Silent()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset(args.preset, args.grasp_head).replace(seed=args.seed)
    if args.signal_head_hidden:
        config = config.replace(signal_head_hidden=args.signal_head_hidden)
    if args.grasp_modes:
        config = config.replace(grasp_modes=args.grasp_modes)
    data = Path(args.data)
    train_pool = RecordPool(data / 'train', args.max_train_scenes, ddp.rank, ddp.world_size)
    train_recs = train_pool.records
    val_recs = (load_records(data / 'val', args.val_scenes)
                if ddp.is_main and (data / 'val').is_dir() else [])
    if not train_recs:
        raise InputError(f'no labelled training scenes under {data / "train"}'
                         + (f' for rank {ddp.rank} of {ddp.world_size}' if ddp.enabled else ''))
    if config.grasp_modes and not all(r.has_dense_labels for r in train_recs):
        raise InputError('--grasp-modes needs dense labels (generate.py --dense-labels) in '
                         f'every training scene under {data / "train"}')
    state_path, last_path, best_path = out / 'train_state.pt', out / 'last.pt', out / 'best.pt'
    step, elapsed, best_score = 0, 0.0, -1.0
    if args.select_by == 'grasp_ap' and args.val_grasp_scenes < 1:
        raise InputError('--select-by grasp_ap needs --val-grasp-scenes >= 1, got '
                         f'{args.val_grasp_scenes}')
    select_key = 'val_grasp_ap' if args.select_by == 'grasp_ap' else 'val_f1'
    grasp_scenes = args.val_grasp_scenes if args.select_by == 'grasp_ap' else 0
    set_seeds(args.seed)
    if args.resume and last_path.is_file() and state_path.is_file():
        model, config, _ = load_checkpoint(last_path, device=device)
        state = torch.load(state_path, map_location='cpu', weights_only=False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
        if not args.freeze_backbone:   # else loaded below, over the head's parameters only
            optimizer.load_state_dict(state['optimizer'])
        step, elapsed = state['step'], state['elapsed']
        # a best score of another selection (older states: F-1) does not carry over
        if state.get('select_by', 'f1') == args.select_by:
            best_score = state.get('best_score', state.get('best_f1', -1.0))
        rng = np.random.default_rng()
        rng.bit_generator.state = state['rng']
        torch.set_rng_state(state['torch_rng'])
        if ddp.rank:   # the saved generator is rank 0's
            rng = np.random.default_rng([args.seed, ddp.rank, step])
        log.line(f'resumed at step {step} ({elapsed / 60:.1f} min trained)')
    else:
        model = ZeroGraspNet(config).to(device)
        if args.init:
            log.line(init_from_checkpoint(model, args.init))
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
        rng = np.random.default_rng(args.seed if not ddp.rank else [args.seed, ddp.rank])
    if args.freeze_backbone:
        log.line(freeze_backbone(model))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=args.lr, weight_decay=args.wd)
        if args.resume and state_path.is_file() and last_path.is_file():
            optimizer.load_state_dict(state['optimizer'])
    ddp.broadcast_model(model)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log.line(f'start: preset {config.name}, {n_params / 1e6:.2f} M parameters, device {device}, '
             f'{len(train_recs)} train / {len(val_recs)} val scenes, batch {args.batch}, '
             + (f'rank 0 of {ddp.world_size} (gloo/nccl all-reduce), ' if ddp.enabled else '')
             + f'command: {" ".join(sys.argv)}')
    budget_s = args.minutes * 60.0 if args.minutes else math.inf
    max_steps = args.steps if args.steps else sys.maxsize
    t_start = time.time() - elapsed
    last_ckpt = last_val = last_scan = time.time()
    bar = tqdm(total=None if max_steps == sys.maxsize else max_steps, initial=step,
               unit='step', file=sys.stdout, disable=args.quiet or not ddp.is_main)
    running: dict[str, float] = {}
    n_run = 0

    def save(tag: Path):
        extra = {'step': step, 'train_minutes': round((time.time() - t_start) / 60, 2),
                 'data': str(data), 'seed': args.seed, 'command': ' '.join(sys.argv)}
        save_checkpoint(tag, model, config, extra)

    def save_state():
        save(last_path)
        torch.save({'optimizer': optimizer.state_dict(), 'step': step,
                    'elapsed': time.time() - t_start, 'best_score': best_score,
                    'select_by': args.select_by,
                    'rng': rng.bit_generator.state, 'torch_rng': torch.get_rng_state()},
                   state_path.with_name(state_path.name + '.tmp'))
        os.replace(state_path.with_name(state_path.name + '.tmp'), state_path)

    stop = time.time() - t_start >= budget_s
    while step < max_steps and not stop:
        lr = learning_rate(step, args.lr, args.warmup, args.halve_every)
        for g in optimizer.param_groups:
            g['lr'] = lr
        batch_idx = rng.choice(len(train_recs), size=min(args.batch, len(train_recs)),
                               replace=False)
        batch = [train_recs[i].sample(sensor_frame=True, grasp_modes=config.grasp_modes > 0)
                 for i in batch_idx]
        optimizer.zero_grad(set_to_none=True)
        ok = True
        try:
            loss, terms = training_step(model, batch, step, device)
        except InputError as exc:   # e.g. no object with enough valid depth: skip the batch
            log.line(f'step {step}: skipped batch {batch_idx.tolist()}: {exc}')
            ok = False
        if ok and not torch.isfinite(loss):
            log.line(f'step {step}: non-finite loss {float(loss)}; batch skipped')
            ok = False
        if ok:
            loss.backward()
        # every rank joins the all-reduce, also with a skipped batch (zero gradients)
        usable, stop = ddp.sync_step(model, ok, time.time() - t_start >= budget_s)
        if not usable:
            optimizer.zero_grad(set_to_none=True)
            step += 1
            continue
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
        optimizer.step()
        step += 1
        if not ok:
            continue
        vals = {k: float(v) for k, v in terms.items()}
        vals.update(loss=float(loss.detach()), lr=lr, grad_norm=grad_norm)
        for k, v in vals.items():
            running[k] = running.get(k, 0.0) + v
        n_run += 1
        bar.update(1)
        bar.set_postfix(loss=f'{vals["loss"]:.3f}')
        if step % args.log_every == 0:
            mean = {k: v / n_run for k, v in running.items()}
            log.metrics('train', step, mean)
            log.line(f'step {step} ' + ' '.join(f'{k}={v:.4g}' for k, v in sorted(mean.items())))
            running, n_run = {}, 0
        now = time.time()
        if args.rescan_every_min and now - last_scan > args.rescan_every_min * 60:
            added = train_pool.refresh()
            if added:
                log.line(f'step {step}: {added} new training scenes, {len(train_recs)} in all')
            last_scan = time.time()
        if not ddp.is_main:
            continue
        if val_recs and now - last_val > args.val_every_min * 60:
            v = validate(model, val_recs, device, args.val_objects, grasp_scenes)
            log.metrics('val', step, v)
            log.line(f'validation at step {step}: {v}')
            if v.get(select_key, -1.0) > best_score:
                best_score = v[select_key]
                save(best_path)
                log.line(f'new best {select_key} {best_score:.4f} -> {best_path}')
            last_val = time.time()
        if now - last_ckpt > args.ckpt_every_min * 60:
            save_state()
            last_ckpt = time.time()
    bar.close()
    if args.dump_rank_weights:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                   out / f'rank{ddp.rank}_weights.pt')
    if not ddp.is_main:
        ddp.close()
        return {'step': step, 'rank': ddp.rank}
    save_state()
    summary = {'step': step, 'train_minutes': round((time.time() - t_start) / 60, 2),
               'world_size': ddp.world_size}
    if val_recs:
        v = validate(model, val_recs, device, args.val_objects, grasp_scenes)
        log.metrics('val', step, v)
        log.line(f'final validation at step {step}: {v}')
        if v.get(select_key, -1.0) > best_score:
            best_score = v[select_key]
            save(best_path)
        summary.update(v)
        save_state()
    summary.update(best_score=best_score, select_by=select_key,
                   machine=f'{platform.platform()} ({os.cpu_count()} cpus)')
    log.line(f'done: {summary}')
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    ddp.close()
    return summary


def plot_training_curve(run_dir: str | Path, png: str | Path | None = None) -> Path:
    """Loss terms and validation metrics of a run (metrics.jsonl) as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()
            if line.strip()]
    # a resumed run repeats the steps after its last checkpoint: keep the latest entry per step
    train_rows = sorted({r['step']: r for r in rows if r['kind'] == 'train'}.values(),
                        key=lambda r: r['step'])
    val_rows = sorted({r['step']: r for r in rows if r['kind'] == 'val' and 'val_f1' in r
                       }.values(), key=lambda r: r['step'])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = [r['step'] for r in train_rows]
    for key in ('loss', 'occupancy', 'normal', 'sdf', 'quality'):
        if train_rows and key in train_rows[0]:
            vals = np.array([r.get(key, np.nan) for r in train_rows])
            k = max(1, len(vals) // 100)   # running mean over ~1 % of the run
            smooth = np.convolve(vals, np.ones(k) / k, mode='same')
            ax1.plot(steps, smooth, label=key)
    ax1.set_xlabel('step')
    ax1.set_yscale('log')
    ax1.set_title('training loss terms (running mean)', fontsize=9)
    ax1.legend(fontsize=7)
    if val_rows:
        vs = [r['step'] for r in val_rows]
        ax2.plot(vs, [r['val_f1'] for r in val_rows], 'o-', label='F-1 @ 1 cm')
        ax2.plot(vs, [r['val_nc'] for r in val_rows], 's-', label='normal consistency')
        ax2b = ax2.twinx()
        ax2b.plot(vs, [r['val_cd_mm'] for r in val_rows], 'r^--', label='CD [mm]')
        ax2b.set_ylabel('Chamfer distance [mm]', color='r')
        ax2.legend(fontsize=7, loc='lower right')
    ax2.set_xlabel('step')
    ax2.set_title('validation (sensor frame, unseen val objects)', fontsize=9)
    fig.tight_layout()
    png = Path(png) if png else run_dir / 'training_curve.png'
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description='Train ZeroGraspNet on generated shards.')
    ap.add_argument('--data', required=True, help='data set root holding train/ (and val/)')
    ap.add_argument('--preset', default='cpu', choices=('cpu', 'paper'))
    ap.add_argument('--grasp-head', default='direct', choices=('direct', 'paper'),
                    help="grasp parameterisation: 'direct' axes or the paper's view/angle bins")
    ap.add_argument('--freeze-backbone', action='store_true',
                    help='train only the finest-depth head (e.g. a new grasp head on a '
                         'trained reconstruction)')
    ap.add_argument('--signal-head-hidden', type=int, default=0,
                    help="hidden width of the finest-depth (surface + grasp) head (0: the "
                         "preset's head_hidden); a new width starts that head fresh under --init")
    ap.add_argument('--grasp-modes', type=int, default=0,
                    help='direct head: regress towards the nearest of each leaf\'s best grasps '
                         'in its N most graspable views (dense labels; model/losses.py '
                         'nearest_grasp_mode) instead of its single best grasp')
    ap.add_argument('--init', default=None,
                    help='start from this checkpoint\'s weights where names and shapes match '
                         '(a fresh run only; --resume wins)')
    ap.add_argument('--out', required=True, help='run directory, e.g. runs/cpu_v1')
    ap.add_argument('--steps', type=int, default=0, help='stop after this many steps')
    ap.add_argument('--minutes', type=float, default=0.0, help='stop after this much time')
    ap.add_argument('--resume', action='store_true', help='continue from <out>/last.pt')
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--wd', type=float, default=0.05)
    ap.add_argument('--warmup', type=int, default=50)
    ap.add_argument('--halve-every', type=int, default=5000)
    ap.add_argument('--clip', type=float, default=5.0)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--device', default='auto')
    ap.add_argument('--threads', type=int, default=1,
                    help='torch CPU threads (0 = torch default); 1 is fastest on a shared '
                         '2-core machine, where 2 threads measured 15x slower per step')
    ap.add_argument('--max-train-scenes', type=int, default=None)
    ap.add_argument('--val-scenes', type=int, default=8)
    ap.add_argument('--val-objects', type=int, default=40)
    ap.add_argument('--select-by', default='grasp_ap', choices=('grasp_ap', 'f1'),
                    help='best.pt: best refined grasp AP (default) or reconstruction F-1')
    ap.add_argument('--val-grasp-scenes', type=int, default=6,
                    help='validation scenes judged for the refined grasp AP')
    ap.add_argument('--val-every-min', type=float, default=10.0)
    ap.add_argument('--ckpt-every-min', type=float, default=5.0)
    ap.add_argument('--log-every', type=int, default=10)
    ap.add_argument('--rescan-every-min', type=float, default=0.0,
                    help='reload new training shards this often (train while generating)')
    ap.add_argument('--quiet', action='store_true', help='no progress bar')
    ap.add_argument('--dump-rank-weights', action='store_true',
                    help='every rank writes <out>/rank<N>_weights.pt at the end (to check '
                         'that distributed ranks stay identical)')
    return ap


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if not args.steps and not args.minutes:
        raise SystemExit('give --steps or --minutes')
    summary = train(args)
    print(json.dumps(summary))


if __name__ == '__main__':
    main()
