"""Train the learned segmenter (centre-voting RGB-D U-Net) on rendered views.

    nice -n 10 python -m zerograsp_ros.training.train_segmentation \
        --views runs/segviews --run runs/segnet --minutes 45 --export checkpoints/segnet.pt

Views come from `zerograsp_ros.data.segmentation_views` (train split for the
weights, val split for choosing the checkpoint). Training runs on random crops
with horizontal flips and brightness jitter; the loss is binary cross-entropy on
foreground plus L1 on the centre offsets of foreground pixels. The learning rate
follows a cosine over the wall-time budget. Every `--eval-every` steps the model is
scored on the val views by object recall at IoU 0.5 (the segmenter's own
clustering, at network resolution); the best is exported. One CPU thread by
default (shared machines); `<run>/state.pt` resumes an interrupted run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import time

import numpy as np

from zerograsp_ros.data.segmentation_views import load_views
from zerograsp_ros.perception.learned_segmentation import (
    OFFSET_UNIT,
    VotingConfig,
    build_network,
    cluster_votes,
    input_features,
    save_segnet,
)
from zerograsp_ros.perception.segmentation_metrics import SegmentationCounts, frame_counts


def centre_offsets(labels: np.ndarray) -> np.ndarray:
    """(2, h, w) centre - pixel (x, y) for labelled pixels, 0 elsewhere; centre = mean pixel."""
    h, w = labels.shape
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols].astype(np.int64)
    n = np.bincount(ids)
    with np.errstate(invalid='ignore', divide='ignore'):
        cx = np.bincount(ids, weights=cols) / n
        cy = np.bincount(ids, weights=rows) / n
    out = np.zeros((2, h, w), np.float32)
    out[0, rows, cols] = cx[ids] - cols
    out[1, rows, cols] = cy[ids] - rows
    return out


def sample(views: dict, i: int, rng: np.random.Generator, crop: tuple[int, int] | None):
    """(features, foreground, offsets) of view i, augmented when rng is given."""
    rgb, depth = views['rgb'][i], views['depth'][i].astype(np.float32)
    height, valid = views['height'][i].astype(np.float32), views['valid'][i]
    labels = views['labels'][i]
    if rng is not None and rng.random() < 0.5:
        rgb, depth, height, valid, labels = (a[:, ::-1] for a in (rgb, depth, height, valid,
                                                                  labels))
    offsets = centre_offsets(labels)
    feats = input_features(rgb, depth, height, valid)
    if rng is not None:
        feats[:3] = np.clip((feats[:3] + 0.5) * rng.uniform(0.75, 1.25), 0, 1) - 0.5
    fg = (labels > 0).astype(np.float32)
    if crop is not None:
        ch, cw = crop
        h, w = labels.shape
        rows, cols = np.nonzero(labels)
        if len(rows):   # crops centred near the objects, jittered
            cy = int(np.clip(rows.mean() + rng.integers(-ch // 3, ch // 3 + 1), ch // 2,
                             h - ch // 2))
            cx = int(np.clip(cols.mean() + rng.integers(-cw // 3, cw // 3 + 1), cw // 2,
                             w - cw // 2))
        else:
            cy, cx = h // 2, w // 2
        y0, x0 = cy - ch // 2, cx - cw // 2
        feats = feats[:, y0:y0 + ch, x0:x0 + cw]
        fg = fg[y0:y0 + ch, x0:x0 + cw]
        offsets = offsets[:, y0:y0 + ch, x0:x0 + cw]
    return (np.ascontiguousarray(feats), np.ascontiguousarray(fg),
            np.ascontiguousarray(offsets / OFFSET_UNIT))


def loss_terms(model, feats, fg, offsets):
    import torch
    from torch.nn import functional as F
    out = model(feats)
    fg_loss = F.binary_cross_entropy_with_logits(out[:, 0], fg)
    weight = fg[:, None]
    off_loss = (torch.abs(out[:, 1:] - offsets) * weight).sum() / weight.sum().clamp(min=1) / 2
    return fg_loss, off_loss


def evaluate(model, views: dict, voting: VotingConfig) -> dict:
    """Val loss and object recall/precision at network resolution (all val views)."""
    import torch

    from zerograsp_ros.perception.learned_segmentation import pad_to_multiple

    model.eval()
    counts = {'all': SegmentationCounts(), 'pile': SegmentationCounts(),
              'packed': SegmentationCounts()}
    losses = []
    with torch.inference_mode():
        for i in range(len(views['labels'])):
            feats, fg, off = sample(views, i, None, None)
            x = torch.from_numpy(feats)[None]
            h, w = fg.shape
            out = model(pad_to_multiple(x))[:, :, :h, :w]
            fg_t = torch.from_numpy(fg)[None]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], fg_t)
            losses.append(float(loss))
            prob = torch.sigmoid(out[0, 0]).numpy()
            labels, _ = cluster_votes(prob > voting.foreground_threshold,
                                      out[0, 1:].numpy() * OFFSET_UNIT, prob, voting)
            # a quarter of the full-resolution visibility threshold: the views are reduced 2x
            c = frame_counts(views['labels'][i], labels, min_visible_pixels=13)
            counts['all'].add(c)
            counts[str(views['layout'][i])].add(c)
    model.train()
    return {'fg_loss': float(np.mean(losses)),
            **{k: v.summary()['object_recall_iou50'] for k, v in counts.items()},
            'precision': counts['all'].summary()['precision']}


def main(argv=None) -> None:
    import torch
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--views', default='runs/segviews', help='has train/ and val/ chunk dirs')
    ap.add_argument('--run', default='runs/segnet', help='state, log and best checkpoint')
    ap.add_argument('--export', default='', help='also copy the best checkpoint here')
    ap.add_argument('--minutes', type=float, default=45.0, help='wall-time budget (all resumes)')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--crop', type=int, nargs=2, default=(128, 160), metavar=('H', 'W'))
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--eval-every', type=int, default=300)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    train = load_views(Path(args.views) / 'train')
    val = load_views(Path(args.views) / 'val')
    print(f"{len(train['labels'])} train views, {len(val['labels'])} val views", flush=True)
    model = build_network()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, elapsed, best, history = 0, 0.0, -1.0, []
    rng = np.random.default_rng(args.seed)
    state_path = run / 'state.pt'
    if state_path.is_file():
        state = torch.load(state_path, map_location='cpu', weights_only=False)
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['opt'])
        step, elapsed, best, history = (state['step'], state['elapsed'], state['best'],
                                        state['history'])
        rng.bit_generator.state = state['rng']
        print(f'resumed at step {step}, {elapsed / 60:.1f} min done, best val recall {best}')
    voting = VotingConfig()
    budget = args.minutes * 60.0
    n_params = sum(p.numel() for p in model.parameters())
    bar = tqdm(total=int(budget), initial=int(min(elapsed, budget)), unit='s',
               desc=f'segnet ({n_params} params)')
    model.train()
    while elapsed < budget:
        t0 = time.time()
        lr = args.lr * 0.5 * (1 + np.cos(np.pi * elapsed / budget))
        for g in opt.param_groups:
            g['lr'] = lr
        batch = [sample(train, int(i), rng, tuple(args.crop))
                 for i in rng.integers(0, len(train['labels']), args.batch)]
        feats, fg, off = (torch.from_numpy(np.stack(b)) for b in zip(*batch))
        fg_loss, off_loss = loss_terms(model, feats, fg, off)
        loss = fg_loss + off_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        dt = time.time() - t0
        elapsed += dt
        bar.update(int(elapsed) - bar.n if int(elapsed) > bar.n else 0)
        bar.set_postfix(step=step, fg=f'{fg_loss.item():.3f}', off=f'{off_loss.item():.3f}')
        last = elapsed >= budget
        if step % args.eval_every == 0 or last:
            t1 = time.time()
            scores = evaluate(model, val, voting)
            elapsed += time.time() - t1
            scores.update(step=step, minutes=round(elapsed / 60, 2),
                          train_fg_loss=float(fg_loss), train_offset_loss=float(off_loss))
            history.append(scores)
            (run / 'history.json').write_text(json.dumps(history, indent=1))
            bar.write(json.dumps(scores))
            if scores['all'] is not None and scores['all'] > best:
                best = scores['all']
                extra = {'step': step, 'minutes': round(elapsed / 60, 2),
                         'train_views': int(len(train['labels'])),
                         'val_views': int(len(val['labels'])), 'val': scores,
                         'params': int(n_params)}
                save_segnet(run / 'best.pt', model, extra)
                if args.export:
                    save_segnet(args.export, model, extra)
            torch.save({'model': model.state_dict(), 'opt': opt.state_dict(), 'step': step,
                        'elapsed': elapsed, 'best': best, 'history': history,
                        'rng': rng.bit_generator.state}, run / 'state.tmp')
            (run / 'state.tmp').replace(state_path)
    bar.close()
    print(f'done: {step} steps, {elapsed / 60:.1f} min, best val recall {best}')


if __name__ == '__main__':
    main()
