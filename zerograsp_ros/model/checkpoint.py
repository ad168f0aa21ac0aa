"""Checkpoints: weights + the full ModelConfig + a format version in one torch file."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from zerograsp_ros.errors import CheckpointError, InputError
from zerograsp_ros.model.config import ModelConfig

FORMAT_VERSION = 1
_MAGIC = 'zerograsp_ros.model'


def save_checkpoint(path, model, config: ModelConfig, extra: dict | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {'magic': _MAGIC, 'format_version': FORMAT_VERSION, 'config': config.to_dict(),
             'state_dict': {k: v.detach().cpu() for k, v in model.state_dict().items()},
             'extra': dict(extra or {})}
    tmp = path.with_name(path.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device='cpu', expected_config: ModelConfig | None = None):
    """Load (model, config, extra) onto `device`, model in eval mode.

    CheckpointError names the problem when the file is missing, corrupt, of
    another format version or its config differs from `expected_config`.
    """
    from zerograsp_ros.model.network import ZeroGraspNet

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:   # truncated / not a torch file: name it
        raise CheckpointError(f'checkpoint {path} is corrupt or not a torch file: {exc}') from exc
    if not isinstance(state, dict) or state.get('magic') != _MAGIC:
        raise CheckpointError(f'{path} is not a zerograsp_ros model checkpoint')
    version = state.get('format_version')
    if version != FORMAT_VERSION:
        raise CheckpointError(f'checkpoint {path} has format version {version}, this code '
                              f'reads version {FORMAT_VERSION}')
    try:
        config = ModelConfig.from_dict(state['config'])
    except (InputError, TypeError, KeyError) as exc:
        raise CheckpointError(f'checkpoint {path} holds an unusable config: {exc}') from exc
    if expected_config is not None:
        diff = expected_config.differences(config)
        if diff:
            raise CheckpointError(f'checkpoint {path} config differs from the expected one '
                                  f'(expected != checkpoint): ' + '; '.join(diff))
    model = ZeroGraspNet(config)
    try:
        model.load_state_dict(state['state_dict'], strict=True)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f'checkpoint {path} weights do not fit its config: {exc}') from exc
    model.to(device)
    model.eval()
    return model, config, state.get('extra', {})


def update_checkpoint_extra(path, updates: dict, out=None) -> None:
    """Write a checkpoint with `updates` merged into its extra dict (weights untouched).

    `out` defaults to `path` (rewritten atomically). CheckpointError as load_checkpoint.
    """
    load_checkpoint(path)   # validates magic, version, config and weights
    state = torch.load(Path(path), map_location='cpu', weights_only=True)
    state['extra'] = {**dict(state.get('extra', {})), **updates}
    out = Path(out) if out is not None else Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, out)
